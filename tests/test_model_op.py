"""Every deformable attention of the model runs the compiled op, and gives the same outputs
and gradients as the pure-PyTorch reference (MSDeformAttn.use_reference = True)."""

import pytest
import torch

from conftest import TINY_MODEL, VARIANTS
from ddetr.models import build
from ddetr.nn import MSDeformAttn

TINY = dict(TINY_MODEL, num_classes=5, dropout=0.0)
# box-refine's attentions are default's: its refinement is covered by two-stage
CASES = ["default", "single-scale", "two-stage"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def use_reference():
    """Switch MSDeformAttn (the class) to the reference; always switched back."""

    def switch(flag):
        MSDeformAttn.use_reference = flag

    yield switch
    MSDeformAttn.use_reference = False


def _model(variant):
    torch.manual_seed(0)
    model, criterion, _ = build(**TINY, **VARIANTS[variant])
    # move the attention off its symmetric init so sampling is off-grid and queries matter
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                m.sampling_offsets.weight.normal_(0, 0.05, generator=gen)
                m.attention_weights.weight.normal_(0, 0.05, generator=gen)
    return model, criterion


def _images():
    gen = torch.Generator().manual_seed(2)
    return [torch.randn(3, 64, 80, generator=gen), torch.randn(3, 48, 64, generator=gen)]


def _targets():
    return [
        dict(labels=torch.tensor([1, 4]), boxes=torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.2]])),
        dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.6, 0.6, 0.4, 0.5]])),
    ]


def _flat(out):
    items = [out["pred_logits"], out["pred_boxes"]]
    for aux in out.get("aux_outputs", []):
        items += [aux["pred_logits"], aux["pred_boxes"]]
    if "enc_outputs" in out:
        items += [out["enc_outputs"]["pred_logits"], out["enc_outputs"]["pred_boxes"]]
    return items


@pytest.mark.parametrize("variant", CASES)
def test_every_deformable_attention_calls_the_op(variant):
    model, _ = _model(variant)
    n_attn = sum(isinstance(m, MSDeformAttn) for m in model.modules())
    assert n_attn == TINY["enc_layers"] + TINY["dec_layers"]
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model.eval()(_images())
    calls = sum(e.count for e in prof.key_averages() if e.key == "ddetr::ms_deform_attn")
    assert calls == n_attn


@pytest.mark.parametrize("variant", CASES)
def test_model_outputs_and_gradients_match_reference(variant, use_reference):
    model, criterion = _model(variant)
    model.train()  # dropout is 0: train mode is deterministic, and gradients flow

    def run():
        model.zero_grad()
        out = model(_images())
        losses = criterion(out, _targets())
        loss = criterion.weighted_total(losses)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        return [t.detach() for t in _flat(out)], grads

    use_reference(False)
    op_out, op_grads = run()
    use_reference(True)
    ref_out, ref_grads = run()
    for a, b in zip(op_out, ref_out):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()
    assert op_grads.keys() == ref_grads.keys()
    for name in op_grads:
        a, b = op_grads[name], ref_grads[name]
        assert torch.allclose(a, b, atol=1e-4 * max(1.0, b.abs().max().item()), rtol=1e-3), (name, (a - b).abs().max())


def test_each_module_matches_reference_on_its_own_inputs(use_reference):
    # capture the exact inputs every MSDeformAttn sees in a forward, then replay both paths
    model, _ = _model("default")
    model.eval()
    captured = []
    hooks = [
        m.register_forward_hook(lambda mod, args, kwargs, out: captured.append((mod, args, kwargs)), with_kwargs=True)
        for m in model.modules()
        if isinstance(m, MSDeformAttn)
    ]
    with torch.no_grad():
        model(_images())
    for h in hooks:
        h.remove()
    assert len(captured) == TINY["enc_layers"] + TINY["dec_layers"]
    with torch.no_grad():
        for mod, args, kwargs in captured:
            mod.use_reference = False
            a = mod(*args, **kwargs)
            mod.use_reference = True
            b = mod(*args, **kwargs)
            del mod.use_reference  # back to the class attribute
            assert torch.allclose(a, b, atol=1e-5, rtol=1e-4), (a - b).abs().max()
