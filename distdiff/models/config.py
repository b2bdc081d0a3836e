"""Record a model's constructor arguments as plain data, so weights can be rebuilt without a run config."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable


def to_plain(value: Any, key: str = "") -> Any:
    """Convert a constructor argument to JSON-serialisable data (tuples become lists).

    Args:
        value: the argument value.
        key: its name, used in the error message.

    Returns:
        The value as None/bool/int/float/str or (nested) lists and str-keyed dicts.

    Raises:
        TypeError: for values with no plain-data form (modules, tensors, functions ...).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [to_plain(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v, f"{key}.{k}") for k, v in value.items()}
    raise TypeError(f"model argument {key!r} of type {type(value).__name__} is not plain data")


def records_config(family: str) -> Callable:
    """Decorator for ``__init__``: store ``self.model_config = {"family", "kwargs"}`` after construction.

    ``kwargs`` holds every constructor argument, defaults included, so the config rebuilds the
    model exactly even if a default changes later. An argument passed as None whose value the
    constructor derives (e.g. ``out_channels``) is recorded as the instance attribute of the same
    name when that attribute is not None.

    Args:
        family: the registry family name ("vae", "unet", ...).

    Returns:
        The decorator.
    """

    def decorate(init: Callable) -> Callable:
        signature = inspect.signature(init)

        @functools.wraps(init)
        def wrapped(self, *args, **kwargs):
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            arguments.pop("self")
            init(self, *args, **kwargs)
            # Arguments whose None default is derived in __init__ (out_channels=None -> in_channels)
            # are recorded with the value the model settled on, read from the attribute of that name.
            for name, value in arguments.items():
                if value is None and getattr(self, name, None) is not None:
                    arguments[name] = getattr(self, name)
            self.model_config = {
                "family": family,
                "kwargs": {name: to_plain(value, name) for name, value in arguments.items()},
            }

        return wrapped

    return decorate
