"""`ddetr bench ARGS...`: the benchmark suite, `python -m pytest benchmarks ARGS...`."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

HELP = "run the benchmark suite (python -m pytest benchmarks ARGS...)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    # everything after `bench` goes to pytest untouched (`ddetr.cli.main` hands it over unparsed)
    p.add_argument("pytest_args", nargs=argparse.REMAINDER, help="arguments for pytest")


def _repo_root() -> str | None:
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # python/ddetr
    for cand in (os.path.dirname(os.path.dirname(package)), os.getcwd()):
        if os.path.isdir(os.path.join(cand, "benchmarks")):
            return cand
    return None


def bench(argv: list) -> int:
    root = _repo_root()
    if root is None:
        print("ddetr bench: the benchmarks/ folder was not found (run it from a source checkout)", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, "-m", "pytest", "benchmarks", *argv], cwd=root)


def run(args) -> int:
    return bench(args.pytest_args)
