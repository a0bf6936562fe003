"""The guide stays true: every generated block of README.md and benchmarks/README.md equals
what benchmarks/report.py renders from the committed result files."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_generated_blocks_match_the_result_files():
    proc = subprocess.run(
        [sys.executable, "benchmarks/report.py", "--check", "README.md", "benchmarks/README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_check_catches_a_hand_edited_figure(tmp_path):
    text = open(os.path.join(ROOT, "benchmarks", "README.md"), encoding="utf-8").read()
    edited = text.replace(" ms / ", " ms / 99.9x faster / ", 1)
    assert edited != text
    doc = tmp_path / "doc.md"
    doc.write_text(edited)
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "report.py"), "--check", str(doc)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "out of date" in proc.stdout
