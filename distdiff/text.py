"""Captions as token ids: a word-level tokenizer over the vocabulary of a dataset's captions.

Why word level, built from the captions: the text encoder is trained from scratch with the U-Net
(no pretrained weights can be fetched), so it can only learn meanings for tokens the captions
contain. distdiff's captions come from templates over class names and colours ("a handwritten
seven"), a closed vocabulary of a few dozen words: one token per word is the shortest, exact
encoding of it, needs no trained merge table, and lets a prompt with a word the model never saw be
refused by name instead of being split into sub-words it has no meaning for. The vocabulary is
computed once, when the shards (or an embedded dataset) are described, and travels in the
dataset manifest and then in the export record, so sampling encodes prompts exactly as training did.

Ids: 0 pad, 1 begin, 2 end, 3.. the words in sorted order. Every caption is [begin, words..., end,
pad...]; the empty caption [begin, end] is the null condition of classifier-free guidance, so no
sequence is all padding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch

PAD, BEGIN, END = 0, 1, 2
SPECIAL_TOKENS = 3
_WORD = re.compile(r"[a-z0-9]+")


def caption_words(caption: str) -> list[str]:
    """The words of a caption: lower-case runs of letters and digits (punctuation is dropped)."""
    return _WORD.findall(caption.lower())


def caption_record(captions: Iterable[str], class_prompts: Sequence[str] = ()) -> dict:
    """The record of a dataset's captions that manifests and exports carry.

    Args:
        captions: every caption of the dataset (or every caption its templates can make).
        class_prompts: one representative caption per class (sample grids and evaluation prompt
            class i with it), or empty.

    Returns:
        {"vocabulary": sorted words, "max_words": longest caption in words, "class_prompts": [...]}.
    """
    vocabulary, longest = set(), 0
    for caption in [*captions, *class_prompts]:
        words = caption_words(caption)
        vocabulary.update(words)
        longest = max(longest, len(words))
    return {"vocabulary": sorted(vocabulary), "max_words": longest, "class_prompts": list(class_prompts)}


@dataclass(frozen=True)
class Tokenizer:
    """Word-level tokenizer over a fixed vocabulary.

    Args:
        vocabulary: the known words (ids 3.. in this order).
        max_length: token sequence length (begin + words + end, padded).
    """

    vocabulary: tuple[str, ...]
    max_length: int

    @classmethod
    def from_record(cls, record: dict) -> "Tokenizer":
        """The tokenizer of a `caption_record`."""
        return cls(tuple(record["vocabulary"]), int(record["max_words"]) + 2)

    @property
    def size(self) -> int:
        """Number of token ids (the text encoder's embedding rows)."""
        return len(self.vocabulary) + SPECIAL_TOKENS

    def encode(self, captions: Sequence[str]) -> torch.Tensor:
        """Token ids (B, max_length) int64 of `captions`.

        Raises:
            ValueError: a word outside the vocabulary, or a caption too long (both named).
        """
        index = {word: i + SPECIAL_TOKENS for i, word in enumerate(self.vocabulary)}
        out = torch.full((len(captions), self.max_length), PAD, dtype=torch.int64)
        for row, caption in enumerate(captions):
            words = caption_words(caption)
            unknown = [w for w in words if w not in index]
            if unknown:
                raise ValueError(f"caption {caption!r}: word(s) {', '.join(map(repr, unknown))} are not in the "
                                 f"vocabulary the model was trained on ({', '.join(self.vocabulary[:40])})")
            if len(words) + 2 > self.max_length:
                raise ValueError(f"caption {caption!r} has {len(words)} words; the model takes at most "
                                 f"{self.max_length - 2}")
            ids = [BEGIN, *(index[w] for w in words), END]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    def null(self) -> torch.Tensor:
        """Token ids (max_length,) of the empty caption: the null condition."""
        return self.encode([""])[0]
