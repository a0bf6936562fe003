"""The one kind of error a user can cause, and the one line the `ddetr` command prints for it.

Validation (options, data, checkpoints, weights files) raises `UserError` (or a subclass:
`DataError`, `CheckpointError`, training's `NonFiniteLossError`); `ddetr.cli.main` catches
it once and prints `ddetr <command>: error: <message>`, exit status 1, no traceback.
"""

from __future__ import annotations

import re


class UserError(Exception):
    """Something the user can fix: the message names the option or file and what was expected."""


def option_error(flag: str, value, expected: str) -> UserError:
    return UserError(f"{flag} {value!r}: expected {expected}")


# DataLoader re-raises a worker's exception as "Caught X in DataLoader worker process N.
# Original Traceback (most recent call last): ... module.X: message": keep the message.
_WORKER = re.compile(r"Caught \w+ in DataLoader worker process (\d+)\.\nOriginal Traceback", re.S)


def is_worker_error(e: BaseException) -> bool:
    """An exception a data loader worker raised (almost always the data's fault)."""
    return bool(_WORKER.match(str(e)))


def one_line(e: BaseException) -> str:
    """The message of `e` as one line (a loader worker's traceback reduced to its last line)."""
    text = str(e)
    m = _WORKER.match(text)
    if m:
        last = text.rstrip().splitlines()[-1]
        text = re.sub(r"^[\w.]+: ", "", last) + f" (in data loader worker {m.group(1)})"
    if isinstance(e, OSError) and e.strerror:
        name = e.filename if e.filename is not None else ""
        text = f"{name}: {e.strerror}" if name else e.strerror
        if e.filename2:
            text += f" ({e.filename2})"
    return " ".join(text.split())
