"""`ddetr train --compile`: the model and the loss math compiled (the matcher
eager) give eager's losses and gradients on the same batch, and a compiled run saves the
plain module's state_dict names. An inductor compile of the training step takes a minute
on this CPU: one (the command line's), the smallest model."""

import copy

import pytest
import torch

from ddetr import cli
from ddetr.cli import build_parser
from ddetr.data.collate import collate_fn
from ddetr.data.synthetic import make_synthetic
from ddetr.engine.build import build_datasets, build_detector
from ddetr.engine.options import resolve
from ddetr.weights.files import read_checkpoint as load_checkpoint
from tiny import TINY_CLI

TINY = [*TINY_CLI, *"--image-size 64 --batch-size 2".split()]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic(
        str(tmp_path_factory.mktemp("syn")), num_train=4, num_val=2, min_image_size=48, max_image_size=64, num_classes=3
    )


def _step(model, criterion, samples, targets):
    model.zero_grad(set_to_none=True)
    losses = criterion(model(samples), targets)
    criterion.weighted_total(losses).backward()
    return {k: v.detach() for k, v in losses.items()}


def test_compiled_step_matches_eager(data):
    # dropout off: inductor draws its own random numbers, so masks would differ from eager's
    args = resolve("train", build_parser().parse_args(["train", "--coco-path", data, *TINY, "--dropout", "0"]))
    train_set, _ = build_datasets(args)
    torch.manual_seed(0)
    model, criterion, _ = build_detector(args, torch.device("cpu"), train_set.num_classes)
    eager, eager_criterion = copy.deepcopy(model).train(), copy.deepcopy(criterion)
    # as ddetr.engine.train does, but with the aot_eager backend: the same dynamo graph and
    # AOTAutograd forward / backward split (where the op's autograd and fake kernel are
    # exercised) at a fraction of inductor's compile time; the CLI test below runs inductor
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


def test_train_compile_cli_saves_plain_names(data, tmp_path):
    rc = cli.main(
        ["train", "--coco-path", data, "--output-dir", str(tmp_path), *TINY, "--compile"]
        + "--epochs 1 --max-steps 1 --eval-every 0".split()
    )
    assert rc == 0
    saved = load_checkpoint(str(tmp_path / "checkpoint.pth"))["model"]
    args = resolve("train", build_parser().parse_args(["train", "--coco-path", data, *TINY]))
    plain, _, _ = build_detector(args, torch.device("cpu"), build_datasets(args)[0].num_classes)
    assert list(saved) == list(plain.state_dict())  # no `_orig_mod.` prefixes
    plain.load_state_dict(saved)  # strict
    assert all(torch.isfinite(v).all() for v in saved.values() if v.is_floating_point())
