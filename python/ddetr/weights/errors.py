"""The errors of ddetr.weights (a weights file, a checkpoint), and the short key listings its messages carry."""

from __future__ import annotations

from ..errors import UserError


class WeightsError(ValueError):
    """A weights file that cannot be read, is of no known layout, or does not fit a model.
    The message starts with the file's path."""


def first(keys, n: int = 5) -> str:
    """The first `n` of `keys` (sorted) and how many there are in all: never a full dump."""
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be read, resumed or built into a model."""
