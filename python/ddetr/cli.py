"""The `ddetr` command: demo | train | eval | predict | check-data | convert | export | bench.

Each command is a module of `ddetr.engine.commands`: HELP, add_arguments, run (and optionally
PARSER, its parser's settings, and PASSES_ON_UNKNOWN); this file only wires them. Every option
defaults to None on the command line; `ddetr.engine.options.resolve` fills what was not given,
once, from the preset, the command's defaults and the one table of defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import warnings

from .engine.commands import bench, check_data, convert, demo, export, predict, train
from .engine.commands import eval as evaluate
from .engine.options import resolve, validate
from .errors import UserError, is_worker_error, one_line

COMMANDS = {
    "demo": demo,
    "train": train,
    "eval": evaluate,
    "predict": predict,
    "check-data": check_data,
    "convert": convert,
    "export": export,
    "bench": bench,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddetr", description="Deformable DETR: train, evaluate, predict.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        command.add_arguments(sub.add_parser(name, help=command.HELP, **getattr(command, "PARSER", {})))
    return parser


def _error(command: str, e: BaseException) -> int:
    print(f"ddetr {command}: error: {one_line(e)}", file=sys.stderr)
    return 1


@contextlib.contextmanager
def _library_warnings(shown: bool):
    """Library warnings (torch, the ONNX exporter, PIL, ...) hidden unless --verbose: a
    command prints its own lines, and a failing one its one error line."""
    if shown:
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            yield
        finally:
            logging.disable(previous)


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    command = COMMANDS[args.command]
    if getattr(command, "PASSES_ON_UNKNOWN", False):
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    with _library_warnings(shown=bool(getattr(args, "verbose", False))):
        return _run(command, args)


def _run(command, args) -> int:
    try:
        args = resolve(args.command, args)  # reads --pretrained's options
        validate(args.command, args)
        status = command.run(args)
    except (UserError, OSError) as e:
        # what the user can fix (OSError: a file or folder the system refused), as one line
        return _error(args.command, e)
    except Exception as e:
        if not is_worker_error(e):  # anything else is a bug: its traceback helps
            raise
        return _error(args.command, e)
    except KeyboardInterrupt:
        print(f"\nddetr {args.command}: interrupted", file=sys.stderr)
        return 130
    return status if isinstance(status, int) else 0  # a command's exit status, where it has one


if __name__ == "__main__":
    sys.exit(main())
