"""The `ddetr` command: demo | train | eval | predict | check-data | convert | export | bench.

Each command is a module of `ddetr.engine.commands` (HELP, add_arguments, run); this file
only wires them. Every option defaults to None on the command line; `ddetr.engine.options.resolve`
fills what was not given, once, from the preset, the command's defaults and the one table of defaults.
"""

from __future__ import annotations

import argparse
import sys

from .engine.commands import bench, check_data, convert, demo, export, predict, train
from .engine.commands import eval as evaluate
from .engine.options import resolve, validate
from .errors import UserError, is_worker_error, one_line
from .weights import WeightsError

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
        command.add_arguments(sub.add_parser(name, help=command.HELP, add_help=command is not bench))
    return parser


def _error(command: str, e: BaseException) -> int:
    print(f"ddetr {command}: error: {one_line(e)}", file=sys.stderr)
    return 1


def main(argv: list | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "bench":  # everything after it goes to pytest untouched
        return bench.run(argparse.Namespace(command="bench", pytest_args=argv[1:]))
    args = build_parser().parse_args(argv)
    try:
        args = resolve(args.command, args)  # reads --pretrained's options
        validate(args.command, args)
        COMMANDS[args.command].run(args)
    except (UserError, WeightsError, OSError) as e:
        # what the user can fix (OSError: a file or folder the system refused), as one line
        return _error(args.command, e)
    except Exception as e:
        if not is_worker_error(e):  # anything else is a bug: its traceback helps
            raise
        return _error(args.command, e)
    except KeyboardInterrupt:
        print(f"\nddetr {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
