"""Two processes with gloo on the CPU under torchrun: both start from the same weights,
train (the weights move, the loss is finite, logged, and the same on both), end with
identical parameters, and the evaluation merged across processes equals a single-process
one."""

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from conftest import SYNTHETIC, TINY_TRAIN, ddetr

# Each rank dumps its trainable parameters before and after the epoch, and the epoch's
# statistics (losses already averaged over the ranks).
WORKER = textwrap.dedent("""
    import os, sys, torch
    import ddetr.engine.train as T
    from ddetr.cli import main

    def params(model):
        inner = getattr(model, "module", model)
        return {n: p.detach().clone() for n, p in inner.named_parameters() if p.requires_grad}

    real = T.train_one_epoch
    def spy(model, *a, **k):
        before = params(model)
        stats = real(model, *a, **k)
        dump = {"before": before, "after": params(model), "stats": stats}
        torch.save(dump, os.path.join(os.environ["DUMP"], f"rank{os.environ['RANK']}.pt"))
        return stats
    T.train_one_epoch = spy
    sys.exit(main(sys.argv[1:]))
""")


def test_two_process_gloo(synthetic_data, tmp_path):
    data = synthetic_data
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    env = dict(os.environ, DUMP=str(tmp_path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script)]
    train = ["train", "--coco-path", data, "--output-dir", str(out), *TINY_TRAIN]
    proc = subprocess.run(
        [*cmd, *train, "--batch-size", "1", "--max-steps", "3", "--lr-backbone", "1e-4"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert r0["after"].keys() == r1["after"].keys() == r0["before"].keys()
    for k in r0["before"]:  # the same start and the same end on both processes
        assert torch.equal(r0["before"][k], r1["before"][k]), k
        assert torch.equal(r0["after"][k], r1["after"][k]), k
    # it trained: every trainable tensor (backbone included: --lr-backbone) moved
    unmoved = [k for k in r0["before"] if torch.equal(r0["before"][k], r0["after"][k])]
    assert not unmoved, unmoved
    assert any(k.startswith("backbone.0.body.layer4") for k in r0["before"])
    # the loss: finite, averaged over the processes (the same on both) and logged
    assert math.isfinite(r0["stats"]["loss"]) and r0["stats"]["loss"] == pytest.approx(r1["stats"]["loss"])
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert log[-1]["train_loss"] == pytest.approx(r0["stats"]["loss"])
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], r0["after"][k]) for k in r0["after"])  # what was saved
    merged = json.loads((out / "metrics.json").read_text())
    # an odd number of images: one process gets one more, the other repeats one
    assert merged["images"] == SYNTHETIC["num_val"]

    # the same checkpoint evaluated by one process: the merge lost and duplicated nothing
    single = tmp_path / "single"
    rc, _, err = ddetr(
        "eval", "--checkpoint", out / "checkpoint.pth", "--coco-path", data, "--output-dir", single,
        "--batch-size", "1", "--num-workers", "0", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert rc == 0, err[-3000:]
    one = json.loads((single / "metrics.json").read_text())
    for k in ("images", "AP", "AP50", "AP75", "AR100"):
        assert one[k] == pytest.approx(merged[k], abs=1e-6), k
