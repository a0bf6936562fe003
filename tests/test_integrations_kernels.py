"""ddetr.integrations.transformers.register(): ddetr as the `kernels` package's
"MultiScaleDeformableAttention" layer, picked by `kernels.kernelize` and by
`from_pretrained(..., use_kernels=True)`, and still ours after transformers re-registers
its hub kernel for CUDA (on loading and on every .train() / .eval()). Needs a transformers
whose kernel support is active with the installed `kernels` (CI: transformers 5.22.2 +
kernels 0.17.2); skipped otherwise, with the reason."""

from __future__ import annotations

import pytest
import torch

from ddetr.integrations import transformers as ddetr_hf
from ddetr.integrations.transformers import hub, layers
from hf_families import FAMILIES, CountOp, build, float_outputs, import_transformers, inputs, rel_err

transformers = import_transformers()
kernels = pytest.importorskip("kernels", reason="the kernels package is not installed")
hub_kernels = pytest.importorskip("transformers.integrations.hub_kernels")
if not hub_kernels.is_kernels_available():
    pytest.skip(
        f"transformers {transformers.__version__} does not take kernels {kernels.__version__} "
        "(its kernel support is off)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.usefixtures("one_thread")
NAME = "deformable_detr"  # group A: the layer behind transformers' hook


@pytest.fixture
def mapping():
    """A clean `kernels` mapping for the test (restored afterwards)."""
    with kernels.use_kernel_mapping({}, inherit_mapping=False):
        yield


def _ours(module) -> bool:
    forward = getattr(module.forward, "__func__", None)
    return forward is layers.MultiScaleDeformableAttention.forward


def _attention_layers(model):
    return [m for m in model.modules() if type(m).__name__ == layers.LAYER_NAME]


def test_register_returns_the_devices_with_a_kernel(mapping):
    expected = [d for d in ("cpu", "cuda") if layers.op_has_kernel(d)]
    assert ddetr_hf.register() == expected


@pytest.mark.parametrize("mode", ["INFERENCE", "TRAINING", "INFERENCE|TORCH_COMPILE"])
def test_kernels_kernelize_picks_the_op(mapping, mode):
    ddetr_hf.register(devices=("cpu",))
    theirs, x = build(NAME), inputs(NAME)
    ours = build(NAME)
    flags = [getattr(kernels.Mode, m) for m in mode.split("|")]
    kernel_mode = flags[0] if len(flags) == 1 else flags[0] | flags[1]
    kernels.kernelize(ours, mode=kernel_mode, device="cpu")
    assert len(_attention_layers(ours)) == FAMILIES[NAME].layers
    assert all(_ours(m) for m in _attention_layers(ours))
    with torch.no_grad():
        expected = float_outputs(theirs(**x))
    with torch.set_grad_enabled(mode == "TRAINING"), CountOp() as count:
        got = float_outputs(ours(**x))
    assert count.calls == FAMILIES[NAME].layers
    for g, e in zip(got, expected):
        assert rel_err(g.detach(), e) < 1e-5
    if mode == "TRAINING":
        sum(t.sum() for t in got if t.requires_grad).backward()  # through the op's backward
        holders = [m for m in ours.modules() if hasattr(m, "attn") and _ours(m.attn)]
        assert len(holders) == FAMILIES[NAME].layers
        assert all(torch.isfinite(m.value_proj.weight.grad).all() for m in holders)


def test_from_pretrained_use_kernels_picks_the_op(mapping, tmp_path):
    build(NAME).save_pretrained(tmp_path)
    cls = transformers.DeformableDetrForObjectDetection
    theirs = cls.from_pretrained(tmp_path).eval()
    ddetr_hf.register(devices=("cpu",))
    ours = cls.from_pretrained(tmp_path, use_kernels=True).eval()
    assert all(_ours(m) for m in _attention_layers(ours))
    x = inputs(NAME)
    with torch.no_grad():
        expected = float_outputs(theirs(**x))
        with CountOp() as count:
            got = float_outputs(ours(**x))
    assert count.calls == FAMILIES[NAME].layers
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-5
    ours.train()  # transformers kernelizes again (TRAINING), re-registering its default mapping
    assert all(_ours(m) for m in _attention_layers(ours))


def test_cuda_entry_wins_over_the_hub_kernel_after_train_and_eval(mapping, tmp_path, monkeypatch):
    """transformers registers kernels-community/deformable-detr for "cuda" on
    from_pretrained(use_kernels=True) and on every .train() / .eval(): for every GPU
    capability, kernels must still pick ddetr. (Read from the mapping: no GPU here.)"""
    monkeypatch.setattr(hub, "op_has_kernel", lambda device: True)  # as a CUDA build would
    assert ddetr_hf.register() == ["cpu", "cuda"]
    build(NAME).save_pretrained(tmp_path)
    model = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path, use_kernels=True)
    model.train()
    model.eval()
    model.train()
    cuda = kernels.layer.globals._KERNEL_MAPPING.get()[layers.LAYER_NAME]["cuda"]
    for capability in (60, 75, 80, 86, 90, 100, 120, 121):
        candidates = cuda.repos_by_capability.search(capability)
        assert len(candidates) == 2  # transformers' hub kernel is registered too ...
        chosen = cuda.repos_by_capability.find_smallest_interval(capability)
        assert chosen == {kernels.Mode.FALLBACK: hub.REPOSITORY}  # ... and ours is picked


def test_layer_passes_kernels_validation():
    """The checks kernels runs on a loaded layer: no __init__, no members beyond
    has_backward / can_torch_compile, the replaced forward's arguments."""
    from kernels.layer.layer import _validate_layer

    for name in ("deformable_detr", "rt_detr", "grounding_dino"):
        check_cls = type(_attention_layers(build(name))[0])
        _validate_layer(check_cls=check_cls, cls=hub.REPOSITORY.load(), repo=hub.REPOSITORY)
