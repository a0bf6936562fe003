"""The one error type of ddetr.weights, and the short key listings its messages carry."""

from __future__ import annotations

from ..errors import UserError


class WeightsError(UserError, ValueError):
    """A weights file that cannot be read, is of no known layout, or does not fit a model.
    The message starts with the file's path."""


def first(keys, n: int = 5) -> str:
    """The first `n` of `keys` (sorted) and how many there are in all: never a full dump."""
    keys = sorted(keys)
    more = f", ... ({len(keys)} in all)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more
