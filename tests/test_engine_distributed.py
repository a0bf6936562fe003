"""Two processes with gloo on the CPU under torchrun: DDP keeps the parameters identical
on both, and the evaluation merged across processes equals a single-process one."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from ddetr.data.synthetic import make_synthetic
from tiny import TINY_CLI

WORKER = textwrap.dedent("""
    import os, sys, torch
    import ddetr.engine.train as T
    from ddetr.cli import main

    real = T.train_one_epoch
    def spy(model, *a, **k):
        stats = real(model, *a, **k)
        inner = getattr(model, "module", model)
        torch.save({n: p.detach().clone() for n, p in inner.named_parameters()},
                   os.path.join(os.environ["DUMP"], f"rank{os.environ['RANK']}.pt"))
        return stats
    T.train_one_epoch = spy
    sys.exit(main(sys.argv[1:]))
""")

TINY = [*TINY_CLI, *"--image-size 64 --lr-backbone 1e-4".split()]


def test_two_process_gloo(tmp_path):
    data = make_synthetic(
        str(tmp_path / "syn"), num_train=8, num_val=5, min_image_size=48, max_image_size=64, num_classes=3
    )
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    env = dict(os.environ, DUMP=str(tmp_path), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        "train",
        "--coco-path",
        data,
        "--output-dir",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "1",
        "--max-steps",
        "3",
        *TINY,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    p0, p1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert p0.keys() == p1.keys()
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k
    ckpt = torch.load(out / "checkpoint.pth", weights_only=True)
    assert all(torch.equal(ckpt["model"][k], p0[k]) for k in p0)  # and it trained
    merged = json.loads((out / "metrics.json").read_text())
    assert merged["images"] == 5  # 3 on one process, 2 (+1 repeated) on the other

    # the same checkpoint evaluated by one process: the merge lost and duplicated nothing
    single = tmp_path / "single"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ddetr",
            "eval",
            "--checkpoint",
            str(out / "checkpoint.pth"),
            "--coco-path",
            data,
            "--output-dir",
            str(single),
            "--batch-size",
            "1",
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    one = json.loads((single / "metrics.json").read_text())
    for k in ("images", "AP", "AP50", "AP75", "AR100"):
        assert one[k] == pytest.approx(merged[k], abs=1e-6), k
