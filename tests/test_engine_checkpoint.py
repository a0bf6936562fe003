"""Checkpoints are written atomically (ddetr.util.files.write_torch) and read by the one
checkpoint reader (ddetr.weights.files.read_checkpoint): a failure or a kill mid-save leaves
the previous complete checkpoint readable."""

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ddetr.util.files import FileWriteError, write_torch
from ddetr.weights import WeightsError
from ddetr.weights.files import read_checkpoint


def test_roundtrip_and_official_namespace_args(tmp_path):
    path = str(tmp_path / "c.pth")
    write_torch(path, {"model": {"w": torch.ones(3)}, "epoch": 4, "args": argparse.Namespace(lr=1e-4)})
    ck = read_checkpoint(path)
    assert ck["epoch"] == 4 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert ck["args"] == {"lr": 1e-4}
    assert os.listdir(tmp_path) == ["c.pth"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsError, match="nope.pth: no such file"):
        read_checkpoint(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(WeightsError, match="bad.pth: cannot read weights: truncated") as e:
        read_checkpoint(str(bad))
    assert "weights_only" not in str(e.value)
    write_torch(str(bad), {"model": {"w": torch.ones(1)}, "epoch": "one"})
    with pytest.raises(WeightsError, match="bad.pth: its 'epoch' entry is not an epoch number"):
        read_checkpoint(str(bad))


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pth")
    write_torch(path, {"model": {"w": torch.ones(1)}, "epoch": 1})

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(FileWriteError, match="c.pth: cannot write: disk full"):
        write_torch(path, {"model": {"w": torch.ones(1)}, "epoch": 2})
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["c.pth"]  # no temporary left behind


WRITER = textwrap.dedent("""
    import sys, torch
    from ddetr.util.files import write_torch
    path = sys.argv[1]
    big = torch.zeros(3_000_000)
    i = 0
    while True:
        i += 1
        write_torch(path, {"model": {"w": big.fill_(i)}, "epoch": i})
        print(i, flush=True)
""")


def test_kill_during_save(tmp_path):
    path = str(tmp_path / "c.pth")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    for delay in (0.05, 0.13, 0.21, 0.37):
        proc = subprocess.Popen([sys.executable, str(script), path], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout.readline().strip()  # one complete checkpoint exists
            time.sleep(delay)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        ck = read_checkpoint(path)
        assert ck["epoch"] >= 1 and bool((ck["model"]["w"] == ck["epoch"]).all())
