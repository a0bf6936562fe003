"""The training loop: it learns, resumes exactly, stops on a non-finite loss without
touching the last good checkpoint, and uses the official parameter groups."""

import math
import os
import shutil

import pytest
import torch

import ddetr.nn
from conftest import SYNTHETIC, TINY_TRAIN
from ddetr.cli import build_parser
from ddetr.data.collate import collate_fn, move_targets
from ddetr.engine import precision
from ddetr.engine import train as T
from ddetr.engine.build import build_datasets, build_detector
from ddetr.engine.optim import build_optimizer
from ddetr.engine.options import resolve
from ddetr.models.criterion import SetCriterion
from ddetr.weights.files import read_checkpoint as load_checkpoint

TINY = [*TINY_TRAIN, "--lr-backbone", "1e-4"]

# one thread, a fixed reduction order: resumed and uninterrupted runs must match bit for bit
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def data(synthetic_data):
    return synthetic_data


def tiny_args(data, out, *extra):
    return resolve(
        "train", build_parser().parse_args(["train", "--coco-path", data, "--output-dir", str(out), *TINY, *extra])
    )


def test_fixed_batch_loss_drops(data):
    args = tiny_args(data, "unused", "--dropout", "0")
    train_set, _ = build_datasets(args)
    model, criterion, _ = build_detector(args, torch.device("cpu"), train_set.num_classes)
    opt = build_optimizer(model, 1e-3, 1e-4)
    samples, targets = collate_fn([train_set[i] for i in range(2)])
    losses = []
    model.train()
    for _ in range(25):
        loss = criterion.weighted_total(criterion(model(samples), list(targets)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.1)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


def _params(model_state):
    return {k: v.clone() for k, v in model_state.items()}


def test_resume_matches_uninterrupted(data, tmp_path):
    steps = ["--max-steps", "2", "--eval-every", "0"]
    full = tiny_args(data, tmp_path / "full", "--epochs", "2", *steps)
    T.train(full)
    first = tiny_args(data, tmp_path / "part", "--epochs", "1", *steps)
    T.train(first)
    assert load_checkpoint(str(tmp_path / "part" / "checkpoint.pth"))["epoch"] == 0
    resumed = tiny_args(data, tmp_path / "part", "--epochs", "2", "--resume", "auto", *steps)
    T.train(resumed)
    a = load_checkpoint(str(tmp_path / "full" / "checkpoint.pth"))
    b = load_checkpoint(str(tmp_path / "part" / "checkpoint.pth"))
    assert a["epoch"] == b["epoch"] == 1
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert a["lr_scheduler"] == b["lr_scheduler"]
    # the whole optimiser state: every parameter's step count and both AdamW moments
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    assert len(sa) == sum(len(g["params"]) for g in a["optimizer"]["param_groups"])  # every parameter stepped
    for i in sa:
        assert sa[i].keys() == sb[i].keys() == {"step", "exp_avg", "exp_avg_sq"}, sa[i].keys()
        for name in sa[i]:
            assert torch.equal(sa[i][name], sb[i][name]), (i, name)
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for name in ("model", "optimizer", "lr_scheduler", "epoch", "args"):
        assert name in a


def test_non_finite_loss_stops_and_keeps_checkpoint(trained, tmp_path, monkeypatch):
    data, path = trained.data, tmp_path / "checkpoint.pth"
    shutil.copy(trained.checkpoint, path)  # one epoch done
    before = load_checkpoint(str(path))
    stamp = os.stat(path).st_mtime_ns

    real = SetCriterion.weighted_total
    monkeypatch.setattr(SetCriterion, "weighted_total", lambda self, losses: real(self, losses) * float("nan"))
    with pytest.raises(T.NonFiniteLossError, match=r"loss is nan at epoch 2 step 1.*not overwritten"):
        T.train(tiny_args(data, tmp_path, "--epochs", "2", "--max-steps", "1", "--eval-every", "0", "--resume", "auto"))
    after = load_checkpoint(str(path))
    assert os.stat(path).st_mtime_ns == stamp and after["epoch"] == 0
    assert all(torch.equal(before["model"][k], after["model"][k]) for k in before["model"])
    assert all(math.isfinite(float(v.float().abs().sum())) for v in after["model"].values())


def test_official_parameter_groups(data):
    args = tiny_args(data, "unused")
    model, _, _ = build_detector(args, torch.device("cpu"), 4)
    opt = build_optimizer(model, lr=2e-4, lr_backbone=2e-5)
    by_id = {id(p): n for n, p in model.named_parameters()}
    main, backbone, proj = ([by_id[id(p)] for p in g["params"]] for g in opt.param_groups)
    assert [g["lr"] for g in opt.param_groups] == [2e-4, 2e-5, pytest.approx(2e-5)]
    assert backbone and all("backbone.0" in n for n in backbone)
    assert proj and all("sampling_offsets" in n or "reference_points" in n for n in proj)
    assert not any("backbone.0" in n or "sampling_offsets" in n for n in main)
    assert len(main) + len(backbone) + len(proj) == sum(p.requires_grad for p in model.parameters())


def test_progress_bar_on_terminal_and_in_logs():
    import io

    from ddetr.engine.progress import Progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty = Tty()
    bar = Progress(4, "epoch 1/2", stream=tty)
    for i in range(1, 5):
        bar.last_draw = 0  # draw every update
        bar.update(i, {"loss": 1.5, "lr": 2e-4})
    bar.close()
    text = tty.getvalue()
    assert "\r" in text and "[" + "#" * 24 + "]" in text and "loss 1.5000" in text
    assert "lr 2.00e-04" in text and "eta" in text and "took" in text and text.endswith("\n")

    log = io.StringIO()
    bar = Progress(100, "epoch 1/2", stream=log, print_freq=50)
    for i in range(1, 101):
        bar.update(i, {"loss": 1.0})
    assert len(log.getvalue().splitlines()) == 3 and "\r" not in log.getvalue()  # steps 1, 50, 100


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=[pytest.mark.cuda, CUDA])])
def test_bfloat16_autocast(data, tmp_path, device, monkeypatch):
    """--amp: the model's layers and the op run in bfloat16 on the CPU as on CUDA; the
    outputs reach the losses in float32, the losses are close to float32's (bfloat16 keeps
    about 3 significant digits: within 10%) but not equal to them; weights stay float32."""
    args = tiny_args(data, tmp_path, "--epochs", "1", "--max-steps", "2", "--amp", "--device", device)
    device = torch.device(device)
    train_set, _ = build_datasets(args)
    model, criterion, _ = build_detector(args, device, train_set.num_classes)
    samples, targets = collate_fn([train_set[i] for i in range(2)])
    samples, targets = samples.to(device), move_targets(targets, device)
    dtypes, op_dtypes = [], []
    hook = model.transformer.decoder.layers[0].linear1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    op = ddetr.nn.ms_deform_attn

    def recording_op(value, spatial_shapes, loc, weights, **extras):
        op_dtypes.append((value.dtype, loc.dtype, weights.dtype))
        return op(value, spatial_shapes, loc, weights, **extras)

    monkeypatch.setattr(ddetr.nn, "ms_deform_attn", recording_op)
    model.eval()
    losses = {}
    for amp in (True, False):
        outputs = precision.forward(model, samples, amp, device)
        assert outputs["pred_logits"].dtype == outputs["pred_boxes"].dtype == torch.float32  # losses in float32
        loss = criterion.weighted_total(criterion(outputs, targets))
        loss.backward()  # the backward runs through the bfloat16 layers and the op
        losses[amp] = loss.item()
    hook.remove()
    assert dtypes == [torch.bfloat16, torch.float32]  # --amp really runs the layers in bfloat16
    calls = len(op_dtypes) // 2  # the op: bfloat16 value and weights, float32 locations
    bf16, f32 = torch.bfloat16, torch.float32
    assert op_dtypes == [(bf16, f32, bf16)] * calls + [(f32, f32, f32)] * calls
    assert math.isfinite(losses[True]) and losses[True] != losses[False]
    assert losses[True] == pytest.approx(losses[False], rel=0.1)

    metrics = T.train(args)
    ck = load_checkpoint(str(tmp_path / "checkpoint.pth"))
    assert all(v.dtype != torch.bfloat16 for v in ck["model"].values())  # weights stay float32
    assert {"AP", "AP50", "AP75"} <= set(metrics) and metrics["images"] == SYNTHETIC["num_val"]
    assert all(math.isfinite(float(v.float().abs().sum())) for v in ck["model"].values())
