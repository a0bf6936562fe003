"""The one way ddetr writes a file, and the one way it unpickles one.

Writing: the new content goes to a temporary file in the destination's folder, is flushed to
disk, then renamed over the destination (a rename within one file system is atomic), and the
folder is synced so the rename itself survives a crash. On any failure the previous file is
intact, no partial file is left, and the error is one `FileWriteError` line naming the path
and the cause (disk full, permission, read-only file system).

Reading: `load_pickle` unpickles tensors and plain containers only (`weights_only`), and
turns every failure into one `FileReadError` line that never suggests unsafe unpickling.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import glob
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from typing import IO

from ..errors import UserError

_TMP_SUFFIX = ".tmp"

# what a user can do about each cause, in their words
_CAUSES = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large for the device or the file-size limit",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.EISDIR: "is a folder, a file was expected",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
}


class FileWriteError(UserError, OSError):
    """A file could not be written; the previous one, if any, is untouched."""


class FileReadError(UserError, OSError):
    """A file could not be read as what it should be."""


def cause(e: BaseException) -> str:
    """The reason an OS-level failure happened, in one short phrase."""
    if isinstance(e, OSError) and e.errno in _CAUSES:
        return _CAUSES[e.errno]
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = " ".join(str(e).split())
    return text[:200] if text else type(e).__name__


def temporary_pattern(path: str) -> str:
    """The glob of the temporaries a write to `path` creates (to clean up after a kill)."""
    folder = os.path.dirname(os.path.abspath(path))
    return os.path.join(glob.escape(folder), "." + glob.escape(os.path.basename(path)) + ".*" + _TMP_SUFFIX + "*")


def remove_stale_temporaries(path: str) -> None:
    """Delete what a write to `path` that was killed half-way left behind."""
    for f in glob.glob(temporary_pattern(path)):
        with contextlib.suppress(OSError):
            os.unlink(f)


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it: set it straight back
    os.umask(mask)
    return mask


def _fsync_folder(folder: str) -> None:
    with contextlib.suppress(OSError):  # some file systems cannot sync a folder: best effort
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _os_error(e: BaseException) -> OSError | None:
    """The OS-level failure behind `e`: itself, or one a library wrapped (torch.save turns a
    full disk into a RuntimeError whose context is the OSError)."""
    seen = set()
    while e is not None and id(e) not in seen and not isinstance(e, UserError):
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def check_writable(path: str, *, overwrite: bool = True, what: str = "file", source: str | None = None) -> None:
    """Refuse, before any work, a destination that cannot take a `what` ("file" or
    "folder"): the wrong kind of thing already there, one there and `overwrite` not given, or
    the `source` being read."""
    path = os.fspath(path)
    if source is not None:
        src, dst = os.path.realpath(source), os.path.realpath(path)
        if src == dst:
            raise FileWriteError(f"{path}: is the source {source}; give another destination")
    if what == "file" and os.path.isdir(path):
        raise FileWriteError(f"{path}: is a folder, a file was expected")
    if what == "folder" and os.path.exists(path) and not os.path.isdir(path):
        raise FileWriteError(f"{path}: is a file, a folder was expected")
    if what == "file" and os.path.exists(path) and not overwrite:
        raise FileWriteError(f"{path}: exists; give --overwrite to replace it")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):  # the nearest folder that exists must be one
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise FileWriteError(f"{path}: {parent} is a file, not a folder")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """A temporary path beside `path` for a library that writes by name (ONNX, torch.export,
    safetensors, PIL); when the block ends without error it is synced and renamed over
    `path`, otherwise removed. Failures become one `FileWriteError` line naming `path`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        if os.path.isdir(path):
            raise IsADirectoryError(errno.EISDIR, "is a folder", path)
        # the temporary keeps the destination's extension: some writers pick the format by it
        # (PIL) or insist on it (AOTInductor's .pt2)
        ext = os.path.splitext(path)[1]
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=_TMP_SUFFIX + ext, dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600: the mode any other new file gets
        os.close(fd)
    except OSError as e:
        raise FileWriteError(f"{path}: cannot write: {cause(e)}") from None
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        failed = _os_error(e)
        if failed is not None:
            raise FileWriteError(f"{path}: cannot write: {cause(failed)}") from None
        raise
    _fsync_folder(folder)


def atomic_write(path: str, write: Callable[[IO[bytes]], None] | bytes | str) -> str:
    """Write `path` whole or not at all. `write` is the content (bytes or text) or a function
    that writes it to the binary file object it is given. Returns `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        if callable(write):
            write(f)
        else:
            f.write(write.encode("utf-8") if isinstance(write, str) else write)
        f.flush()
    return path


def append_line(path: str, line: str) -> None:
    """Append one line to a log (`path`), whole or not at all: a failed append (disk full)
    cuts the file back to where it was and is one `FileWriteError` line naming `path`."""
    path = os.fspath(path)
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    except OSError as e:
        raise FileWriteError(f"{path}: cannot append: {cause(e)}") from None
    try:
        size = os.fstat(fd).st_size
        try:
            while data:  # unbuffered: nothing is left to be flushed after a failure
                data = data[os.write(fd, data) :]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    except OSError as e:
        raise FileWriteError(f"{path}: cannot append: {cause(e)}") from None
    finally:
        os.close(fd)


def write_json(path: str, obj, indent: int | None = 2, sort_keys: bool = False) -> str:
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys)
    return atomic_write(path, text + "\n")


def write_torch(path: str, obj) -> str:
    import torch

    return atomic_write(path, lambda f: torch.save(obj, f))


def read_json(path: str, what: str = "JSON file"):
    """The parsed JSON of `path`; a missing, unreadable or invalid file is one line naming it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileReadError(f"{path}: is a folder, a {what} was expected")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileReadError(f"{path}: no such {what}") from None
    except OSError as e:
        raise FileReadError(f"{path}: cannot read: {cause(e)}") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise FileReadError(f"{path}: not a valid {what}: {cause(e)}") from None
    except RecursionError:
        raise FileReadError(f"{path}: not a valid {what}: nested too deeply") from None


def load_pickle(path: str, map_location="cpu"):
    """What `torch.save` wrote to `path`, unpickling tensors and plain containers only (and
    the argparse.Namespace official checkpoints keep their options in). Anything else, or a
    truncated file, is one `FileReadError` line: the file is not trusted, so the message
    never suggests turning `weights_only` off."""
    import torch

    path = os.fspath(path)
    if os.path.isdir(path):
        raise FileReadError(f"{path}: is a folder, a weights or checkpoint file was expected")
    if not os.path.isfile(path):
        raise FileReadError(f"{path}: no such file")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as e:
        raise FileReadError(f"{path}: cannot read: {cause(e)}") from None
    except Exception as e:  # noqa: BLE001 - a truncated, corrupt or foreign file fails in many ways
        if "Unsupported global" in str(e):
            reason = "it holds Python objects other than tensors and plain containers, which are never loaded"
        else:
            reason = "truncated or not a file torch.save wrote"
        raise FileReadError(f"{path}: cannot read weights: {reason}") from None
