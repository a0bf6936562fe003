"""Checkpoints are written atomically: a failure or a kill mid-save leaves the previous
complete checkpoint readable."""

import argparse
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ddetr.engine import checkpoint as C


def test_roundtrip_and_official_namespace_args(tmp_path):
    path = str(tmp_path / "c.pth")
    C.save_checkpoint({"model": {"w": torch.ones(3)}, "epoch": 4, "args": argparse.Namespace(lr=1e-4)}, path)
    ck = C.load_checkpoint(path)
    assert ck["epoch"] == 4 and torch.equal(ck["model"]["w"], torch.ones(3))
    assert C.checkpoint_args(ck) == {"lr": 1e-4}
    assert os.listdir(tmp_path) == ["c.pth"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(C.CheckpointError, match="nope.pth: checkpoint not found"):
        C.load_checkpoint(str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(C.CheckpointError, match="bad.pth: cannot read"):
        C.load_checkpoint(str(bad))


def test_failed_save_keeps_previous(tmp_path, monkeypatch):
    path = str(tmp_path / "c.pth")
    C.save_checkpoint({"model": {}, "epoch": 1}, path)

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        C.save_checkpoint({"model": {}, "epoch": 2}, path)
    monkeypatch.undo()
    assert C.load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["c.pth"]  # no temporary left behind


WRITER = textwrap.dedent("""
    import sys, torch
    from ddetr.engine.checkpoint import save_checkpoint
    path = sys.argv[1]
    big = torch.zeros(3_000_000)
    i = 0
    while True:
        i += 1
        save_checkpoint({"model": {"w": big.fill_(i)}, "epoch": i}, path)
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
        ck = C.load_checkpoint(path)
        assert ck["epoch"] >= 1 and bool((ck["model"]["w"] == ck["epoch"]).all())
