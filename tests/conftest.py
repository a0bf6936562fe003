"""The scaffolding every test shares: one tiny model, one synthetic data set, one trained
checkpoint, one way to run the command line. Import the names (`from conftest import ...`);
request the fixtures by name.

Model
- TINY_MODEL: the tiny detector's options (ResNet-18, hidden size 64 in 4 heads, one encoder
  and two decoder layers, 20 queries, four feature levels): a few training steps take
  seconds on a CPU. Tests add `num_classes` and the option they are about.
- VARIANTS: the four published variants by ddetr's own names ("default", "single-scale",
  "box-refine", "two-stage"), as options on top of any base.
- tiny_model(variant="default", seed=0, **options): that model, seeded, in eval mode.
- TINY_CLI: TINY_MODEL as `ddetr` flags, with --num-workers 0 --device cpu --quiet.
- TINY_TRAIN: TINY_CLI and the shared run's training options (1 epoch, 2 steps of 2 images
  of 64 px). Flags appended after it win.

Data and checkpoint (session-scoped: made once, shared; never write into them)
- synthetic_data: the path of a synthetic COCO set (its sizes: SYNTHETIC). To change it,
  copy it first (shutil.copytree).
- trained: one `ddetr train TINY_TRAIN` run on synthetic_data: `.data`, `.dir` (holding
  checkpoint.pth, log.txt, metrics.json) and `.checkpoint`. To resume or alter the
  checkpoint, copy it into tmp_path first.
- images(data, split="val"): the sorted image paths of a split.

Command line
- ddetr(*args, cwd=None, env=None, **popen): Run(rc, out, err) of `python -m ddetr ARGS` in a
  fresh process, as a user runs it.
- ddetr_here(*args): the same through `cli.main` in this process (no interpreter start);
  argparse's exits become the exit status.
- one_error(run, command, *parts): asserts the run failed with one line
  `ddetr COMMAND: error: ...` holding each part, and no traceback; returns the line.

Threads
- one_thread (module): torch on one thread for the module, restored afterwards.
"""

import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import pytest
import torch

# Inductor caches compiled graphs in one folder per user and reuses a graph compiled against
# another build of the op (another schema) from there: each test session gets its own.
if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
    _inductor_cache = tempfile.TemporaryDirectory(prefix="ddetr-inductor-")  # removed at exit
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = _inductor_cache.name

# ---------------------------------------------------------------------------------- model

TINY_MODEL = dict(
    backbone="resnet18",
    hidden_dim=64,
    nheads=4,  # not the default 8: a test can tell options read from a file from the defaults
    enc_layers=1,
    dec_layers=2,
    dim_feedforward=128,
    num_queries=20,
)

VARIANTS = {
    "default": dict(),
    "single-scale": dict(num_feature_levels=1),
    "box-refine": dict(with_box_refine=True),
    "two-stage": dict(with_box_refine=True, two_stage=True),
}


def tiny_model(variant="default", seed=0, **options):
    """The tiny model of `variant` (with `options` on top), built after manual_seed(seed), in
    eval mode."""
    from ddetr.models import build_model

    torch.manual_seed(seed)
    return build_model(**{**TINY_MODEL, **VARIANTS[variant], **options}).eval()


def flags(options: dict) -> list:
    """Model options as `ddetr` flags: hidden_dim=32 -> --hidden-dim 32."""
    return [s for k, v in options.items() for s in ("--" + k.replace("_", "-"), str(v))]


TINY_CLI = [*flags(TINY_MODEL), *"--num-workers 0 --device cpu --quiet".split()]
TINY_TRAIN = [*TINY_CLI, *"--epochs 1 --batch-size 2 --image-size 64 --max-steps 2".split()]

# ----------------------------------------------------------------------- data, checkpoint

# An odd number of validation images: two processes split them unevenly (one repeats one).
SYNTHETIC = dict(num_train=8, num_val=5, min_image_size=48, max_image_size=64, num_classes=3)


class Trained(NamedTuple):
    data: str  # the data set it was trained on
    dir: Path  # checkpoint.pth, log.txt, metrics.json
    checkpoint: Path


def images(data, split="val"):
    """The sorted image paths of a split of a COCO-layout folder."""
    folder = Path(data) / f"{split}2017"
    return [str(p) for p in sorted(folder.iterdir())]


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory):
    from ddetr.data.synthetic import make_synthetic

    return make_synthetic(str(tmp_path_factory.mktemp("synthetic")), **SYNTHETIC)


@pytest.fixture(scope="session")
def trained(synthetic_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained")
    rc, _, err = ddetr_here("train", "--coco-path", synthetic_data, "--output-dir", out, *TINY_TRAIN)
    assert rc == 0, err
    return Trained(synthetic_data, out, out / "checkpoint.pth")


# --------------------------------------------------------------------------- command line


class Run(NamedTuple):
    rc: int
    out: str
    err: str


def ddetr(*args, cwd=None, env=None, timeout=300, **popen) -> Run:
    """`python -m ddetr ARGS` in a fresh process (`popen`: more of subprocess.run's options,
    e.g. preexec_fn to limit the file size)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ddetr", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        **popen,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


def ddetr_here(*args) -> Run:
    """`ddetr ARGS` through cli.main in this process."""
    from ddetr import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = cli.main(list(map(str, args)))
        except SystemExit as e:  # argparse: --help, usage errors
            rc = e.code if isinstance(e.code, int) else 1
    return Run(rc, out.getvalue(), err.getvalue())


def one_error(run: Run, command: str, *parts: str) -> str:
    """The single error line of a failed run, holding each of `parts`."""
    rc, _, err = run
    assert rc == 1, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"ddetr {command}: error: "), err
    assert len(lines[0]) < 400, err
    for p in parts:
        assert p in lines[0], err
    return lines[0]


# -------------------------------------------------------------------------------- threads


@pytest.fixture(scope="module")
def one_thread():
    """Small-tensor tests: with OpenMP threads on a busy shared machine they spend most of
    their time spinning, so such modules run on one thread (restored afterwards)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
