"""`ddetr bench`: the suite that ships inside the package runs from any folder (an installed
wheel has no benchmarks/), writes its results as JSON, and passes what it does not know to
pytest."""

import json
import os
import subprocess
import sys

import pytest

import ddetr
from ddetr import cli
from ddetr.engine.commands import bench

pytest.importorskip("pytest_benchmark", reason="the bench extra is not installed: pip install 'ddetr[bench]'")


def test_the_suite_is_inside_the_package():
    package = os.path.dirname(ddetr.__file__)
    assert os.path.dirname(bench.SUITE_DIR) == package
    assert bench.suites() == ["model", "module", "op", "threads"]


def test_unknown_arguments_go_to_pytest(monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(bench.subprocess, "call", lambda cmd: calls.append(cmd) or 3)
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--suite", "op", "--output", str(out), "-k", "forward", "-x"]) == 3  # pytest's status
    (cmd,) = calls
    assert cmd[1:4] == ["-m", "pytest", os.path.join(bench.SUITE_DIR, "test_bench_op.py")]
    assert cmd[cmd.index("--benchmark-json") + 1] == str(out)
    assert cmd[-3:] == ["-k", "forward", "-x"]


def test_other_commands_still_refuse_unknown_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["convert", "a.pth", "b", "--to", "hf", "-k", "x"])
    assert e.value.code == 2 and "unrecognized arguments: -k x" in capsys.readouterr().err


def test_output_folder_must_exist(tmp_path, capsys):
    assert cli.main(["bench", "--output", str(tmp_path / "no" / "r.json")]) == 1
    assert "--output" in capsys.readouterr().err


def test_runs_from_a_folder_without_benchmarks(tmp_path):
    """The op suite's small shape, forward, CPU: the reference and ddetr, timed, from a folder
    that holds nothing of the repository; the JSON holds both and ddetr's speed-up."""
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(ddetr.__file__)))
    argv = ["--suite", "op", "--output", "r.json", "-k", "small and cpu and not backward", "-q"]
    proc = subprocess.run(
        [sys.executable, "-m", "ddetr", "bench", *argv],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "results in r.json" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == ["r.json"]  # no cache or other files left behind
    cases = json.loads((tmp_path / "r.json").read_text())["benchmarks"]
    assert sorted(c["extra_info"]["impl"] for c in cases) == ["ddetr", "reference"]
    assert {c["group"] for c in cases} == {"op/small/forward/cpu/float32/N=1"}
    ours = next(c for c in cases if c["extra_info"]["impl"] == "ddetr")
    assert ours["stats"]["median"] > 0 and ours["extra_info"]["speedup_vs_reference"] > 0
