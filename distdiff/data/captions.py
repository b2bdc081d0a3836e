"""Captions for the datasets distdiff converts: what each sample's `txt` member says.

Class-labelled sets get captions from templates over their class names (MNIST "a handwritten
seven"; CIFAR-10 one of a few photo templates, picked by sample index; Stacked MNIST its three digits
and their colours); image folders and CelebA-HQ take the caption file beside an image (NAME.txt)
when the user has one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from distdiff.text import caption_record

DIGITS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
STACK_COLOURS = ("red", "green", "blue")  # Stacked MNIST: the digits are the R, G, B channels
CIFAR_TEMPLATES = ("a photo of a {}", "a small photo of a {}", "a blurry photo of a {}", "a picture of a {}")

Captioner = Callable[[int, int], str]  # (label, sample index) -> caption


def mnist_caption(label: int, index: int = 0) -> str:
    """'a handwritten seven'."""
    return f"a handwritten {DIGITS[label]}"


def stacked_mnist_caption(label: int, index: int = 0) -> str:
    """'a red three, a green one and a blue four' for label 314 (100 * R + 10 * G + B)."""
    digits = (label // 100, label // 10 % 10, label % 10)
    parts = [f"a {colour} {DIGITS[d]}" for colour, d in zip(STACK_COLOURS, digits)]
    return f"{parts[0]}, {parts[1]} and {parts[2]}"


def cifar_captioner(class_names: list[str]) -> Captioner:
    """Templates over CIFAR-10's class names, the template picked by sample index."""

    def caption(label: int, index: int) -> str:
        return CIFAR_TEMPLATES[index % len(CIFAR_TEMPLATES)].format(class_names[label].replace("_", " "))

    return caption


def captions_of_classes(captioner: Captioner, num_classes: int, variants: int = 1) -> dict:
    """The caption record (vocabulary, one prompt per class) of a template captioner."""
    every = [captioner(label, i) for label in range(num_classes) for i in range(variants)]
    return caption_record(every, [captioner(label, 0) for label in range(num_classes)])


def caption_file(image: Path) -> str | None:
    """The caption beside an image (same name, .txt), stripped, or None when there is none."""
    path = image.with_suffix(".txt")
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None
