"""Two builds of ddetr's op, timed alternately at one shape: before/after a change.

Two builds register the same `torch.ops.ddetr` names, so they cannot share a process: each
round runs every build in a fresh subprocess, one after the other, and the builds swap
order every round, so a machine whose speed drifts over minutes (a shared VM) drifts for
both alike. Prints the median per build and the ratio.

    # a build of another commit, installed aside:
    git worktree add /tmp/old <commit> && (cd /tmp/old &&
        pip install --no-build-isolation --no-deps --target /tmp/old-install .)
    python benchmarks/compare_builds.py --build old=/tmp/old-install --build new= --rounds 7

`--build NAME=PATH` puts PATH first on PYTHONPATH (empty: the ddetr installed in this
interpreter's environment); `--env NAME:VAR=VALUE` sets a variable for that build only, so
one build can be timed against itself under two settings:

    python benchmarks/compare_builds.py --build all= --build one= --env all:DDETR_CPU_HEADS=all \
        --env one:DDETR_CPU_HEADS=1 --shape encoder-spread/uniform
 `--threads 1` with the CPU-time column is the steadiest
comparison on a machine that other jobs share: CPU time counts only this process's work.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SHAPES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python", "ddetr", "bench", "shapes.py")

# Runs in the subprocess: times forward and forward + backward, prints one JSON line.
CHILD = r"""
import importlib.util, json, sys, time
import torch, ddetr
# this checkout's shapes, whichever build runs (an older one may not ship ddetr.bench)
spec = importlib.util.spec_from_file_location("bench_shapes", {shapes!r})
shapes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(shapes)
op_inputs = shapes.op_inputs
if {threads}:
    torch.set_num_threads({threads})
torch.manual_seed(0)
inputs = op_inputs({shape!r}, {batch}, "cpu", torch.float32, requires_grad=True)
args = [inputs[k] for k in ("value", "spatial_shapes", "level_start_index",
                            "sampling_locations", "attention_weights")]
op = torch.ops.ddetr.ms_deform_attn

def forward():
    with torch.no_grad():
        op(*args, 64)

def forward_backward():
    out = op(*args, 64)
    out.backward(torch.ones_like(out))
    for t in (args[0], args[3], args[4]):
        t.grad = None

result = {{"build_torch": ddetr.build_info()["torch_version"], "file": ddetr.__file__}}
for name, fn in (("forward", forward), ("forward_backward", forward_backward)):
    fn()  # warm-up: first-touch page faults, the thread pool
    times, cpu = [], []
    for _ in range({repeats}):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    result[name] = min(times)
    result[name + "_cpu"] = min(cpu)
print(json.dumps(result))
"""


def run_build(path: str, shape: str, batch: int, repeats: int, threads: int, extra_env: dict) -> dict:
    env = {**os.environ, **extra_env}
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    code = CHILD.format(shapes=SHAPES, shape=shape, batch=batch, repeats=repeats, threads=threads)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd="/", timeout=600)
    if res.returncode != 0:
        raise SystemExit(f"build at {path or '(installed)'} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--build",
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a build to time: PATH first on PYTHONPATH (empty: installed)",
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME:VAR=VALUE", help="a variable for build NAME only"
    )
    parser.add_argument("--shape", default="encoder", help="python/ddetr/bench/shapes.py SHAPES key")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=7, help="subprocesses per build")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per subprocess (best kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args(argv)
    builds = []
    for spec in args.build:
        if "=" not in spec:
            parser.error(f"--build takes NAME=PATH, got {spec!r}")
        builds.append(tuple(spec.split("=", 1)))
    envs = {name: {} for name, _ in builds}
    for spec in args.env:
        name, _, assignment = spec.partition(":")
        if name not in envs or "=" not in assignment:
            parser.error(f"--env takes NAME:VAR=VALUE with NAME one of --build's, got {spec!r}")
        var, value = assignment.split("=", 1)
        envs[name][var] = value
    modes = ("forward", "forward_backward", "forward_cpu", "forward_backward_cpu")
    times = {name: {mode: [] for mode in modes} for name, _ in builds}
    for r in range(args.rounds):
        order = builds if r % 2 == 0 else builds[::-1]
        for name, path in order:
            res = run_build(path, args.shape, args.batch, args.repeats, args.threads, envs[name])
            for mode in modes:
                times[name][mode].append(res[mode])
            print(
                f"round {r + 1}: {name} (built for torch {res['build_torch']}): "
                f"forward {res['forward'] * 1e3:.2f} ms, "
                f"forward+backward {res['forward_backward'] * 1e3:.2f} ms",
                flush=True,
            )
    first = builds[0][0]
    print(
        f"\nmedians over {args.rounds} rounds, {args.shape} N={args.batch} float32, "
        f"{args.threads or 'default'} threads, {os.cpu_count()} CPUs (_cpu: process CPU time):"
    )
    for mode in modes:
        base = statistics.median(times[first][mode])
        for name, _ in builds:
            med = statistics.median(times[name][mode])
            print(f"  {mode:17s} {name:10s} {med * 1e3:8.2f} ms  ({med / base:.3f}x of {first})")


if __name__ == "__main__":
    main()
