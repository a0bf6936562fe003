"""`ddetr train --compile`: the model and the loss math compiled (the matcher
eager) give eager's losses and gradients on the same batch, and a compiled run saves the
plain module's state_dict names. Both compile with the aot_eager backend: the same dynamo
graph and AOTAutograd forward / backward split as inductor (where the op's autograd and
fake kernel are exercised), without inductor's code generation, which neither result
depends on. Inductor itself compiles the op forward and backward in test_op_autograd.py and
the inference model in test_inference.py."""

import copy
import functools

import pytest
import torch

from conftest import TINY_TRAIN, ddetr_here
from ddetr.cli import build_parser
from ddetr.data.collate import collate_fn
from ddetr.engine.build import build_datasets, build_detector
from ddetr.engine.options import resolve
from ddetr.weights import model_from_checkpoint
from ddetr.weights.files import read_checkpoint as load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def _step(model, criterion, samples, targets):
    model.zero_grad(set_to_none=True)
    losses = criterion(model(samples), targets)
    criterion.weighted_total(losses).backward()
    return {k: v.detach() for k, v in losses.items()}


def test_compiled_step_matches_eager(synthetic_data):
    # dropout off: a compiled graph draws its own random numbers, so masks would differ from eager's
    argv = ["train", "--coco-path", synthetic_data, *TINY_TRAIN, "--dropout", "0"]
    args = resolve("train", build_parser().parse_args(argv))
    train_set, _ = build_datasets(args)
    torch.manual_seed(0)
    model, criterion, _ = build_detector(args, torch.device("cpu"), train_set.num_classes)
    eager, eager_criterion = copy.deepcopy(model).train(), copy.deepcopy(criterion)
    # as ddetr.engine.train does, with the aot_eager backend
    compiled = torch.compile(model.train(), dynamic=True, backend="aot_eager")
    criterion.compile_losses(dynamic=True, backend="aot_eager")
    samples, targets = collate_fn([train_set[i] for i in range(2)])

    got = _step(compiled, criterion, samples, list(targets))
    want = _step(eager, eager_criterion, samples, list(targets))
    assert got.keys() == want.keys() and {"loss_ce", "loss_bbox", "loss_giou"} <= got.keys()
    for k in want:  # float32, a different order of sums: within 1e-5 relative
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    want_grads = {n: p.grad for n, p in eager.named_parameters() if p.grad is not None}
    assert grads.keys() == want_grads.keys() and len(grads) > 50
    for n, g in grads.items():  # within 1e-3 of each tensor's largest gradient
        torch.testing.assert_close(g, want_grads[n], rtol=0, atol=1e-3 * float(want_grads[n].abs().max()) + 1e-8, msg=n)


def test_train_compile_cli_saves_plain_names(trained, tmp_path, monkeypatch):
    compiled = []
    real = torch.compile

    def aot_eager(fn, **options):  # the command's torch.compile calls, on the cheap backend
        compiled.append(getattr(fn, "__name__", type(fn).__name__))
        return real(fn, **{**options, "backend": "aot_eager"})

    monkeypatch.setattr(torch, "compile", functools.wraps(real)(aot_eager))
    argv = ["--coco-path", trained.data, "--output-dir", tmp_path, *TINY_TRAIN, "--max-steps", "1"]
    rc, _, err = ddetr_here("train", *argv, "--compile", "--eval-every", "0")
    assert rc == 0, err
    assert compiled == ["DeformableDETR", "label_loss", "box_losses"]  # the model and the loss math
    saved = load_checkpoint(str(tmp_path / "checkpoint.pth"))["model"]
    plain = load_checkpoint(str(trained.checkpoint))["model"]  # the same options, not compiled
    assert list(saved) == list(plain)  # no `_orig_mod.` prefixes
    assert not any(k.startswith("_orig_mod") for k in saved)
    model_from_checkpoint(str(trained.checkpoint))[0].load_state_dict(saved)  # strict
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
