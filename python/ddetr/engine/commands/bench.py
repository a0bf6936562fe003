"""`ddetr bench`: the benchmark suite that ships with ddetr (`ddetr.bench`: the op, the module,
the model, CPU thread scaling), run by pytest-benchmark, its results written as JSON. It runs
from an installed package on any machine: CUDA cases run where a GPU is."""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile

from ...errors import UserError

HELP = "run the benchmark suite (op, module, model, CPU threads); results as JSON"
# the suite's folder, found without importing it (it imports the engine: the arrow runs that way)
SUITE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bench")
PREFIX = "test_bench_"
# arguments this command does not know go to pytest as they are (`-k decoder`, `-x`, ...)
PASSES_ON_UNKNOWN = True
PARSER = dict(allow_abbrev=False)  # an abbreviation of one of ours must not eat one of pytest's


def suites() -> list:
    return sorted(os.path.basename(f)[len(PREFIX) : -3] for f in glob.glob(os.path.join(SUITE_DIR, PREFIX + "*.py")))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--suite", nargs="+", choices=suites(), default=None, help="default: all")
    p.add_argument("--output", default="ddetr-bench.json", help="the results (pytest-benchmark's JSON); %(default)s")
    p.add_argument("--smoke", action="store_true", help="each case once, untimed, nothing written (a quick check)")
    p.epilog = "Other arguments go to pytest, e.g. ddetr bench --suite op -k 'decoder and cuda'."


def pytest_command(args, storage: str) -> list:
    files = [os.path.join(SUITE_DIR, f"{PREFIX}{s}.py") for s in args.suite or suites()]
    # no cache folder inside an installed package, the suite's folder as pytest's root, and
    # pytest-benchmark's own store (unused: --output is the result) not in the current folder
    cmd = [sys.executable, "-m", "pytest", *files, "-p", "no:cacheprovider", "--rootdir", SUITE_DIR]
    cmd += ["--benchmark-storage", "file://" + storage]
    cmd += ["--benchmark-disable"] if args.smoke else ["--benchmark-json", os.path.abspath(args.output)]
    return cmd + list(args.rest)


def run(args) -> int:
    if importlib.util.find_spec("pytest_benchmark") is None:
        raise UserError("needs pytest and pytest-benchmark: pip install 'ddetr[bench]'")
    if not args.smoke:
        folder = os.path.dirname(os.path.abspath(args.output))
        if not os.path.isdir(folder):
            raise UserError(f"--output {args.output}: the folder {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix="ddetr-bench-") as storage:
        status = subprocess.call(pytest_command(args, storage))
    if status == 0 and not args.smoke:
        print(f"ddetr bench: results in {args.output}")
    return status
