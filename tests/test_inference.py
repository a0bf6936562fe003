"""optimize_for_inference: batch-norm folding (exact in float64), outputs against the eager
model (float32 to 1e-4 relative, bfloat16 / float16 within stated tolerances), the input
model left unchanged, new image sizes without recompiling, and its errors. Compiles use
the cheap dynamo backends; one test runs inductor at a tiny size."""

import copy

import pytest
import torch
from torch._dynamo.testing import CompileCounter

from conftest import VARIANTS, tiny_model
from ddetr import optimize_for_inference
from ddetr.inference import fold_frozen_batch_norms
from ddetr.models import FrozenBatchNorm2d
from ddetr.util.misc import nested_tensor_from_tensor_list

# Large enough that no feature map is 1 pixel wide (dynamo specialises sizes 0 and 1)
# and that convolutions pick the same backend at every size.
SIZES = [(256, 320), (288, 352), (320, 224)]
# bfloat16 keeps 8 bits of mantissa: boxes (normalised, float32 heads on bfloat16
# features) and scores (sigmoid of float32 logits) agree to these absolute tolerances.
BOX_TOL = {torch.bfloat16: 5e-3, torch.float16: 1e-3}
SCORE_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}

pytestmark = pytest.mark.usefixtures("one_thread")


def _model(variant="default", **kw):
    """A tiny model whose frozen batch norms and box head are not the identity / zero they
    start as, so folding and box arithmetic are exercised."""
    model = tiny_model(variant, **{"num_classes": 7, **kw})
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, FrozenBatchNorm2d):
                n = m.weight.shape[0]
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0, 0.05, generator=gen)
    return model


def _images(sizes=SIZES[:1], seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=gen) for h, w in sizes]


def _flat(out, prefix=""):
    """Every tensor of an outputs dict, by path."""
    if isinstance(out, torch.Tensor):
        return {prefix: out}
    items = out.items() if isinstance(out, dict) else enumerate(out)
    return {k: v for key, val in items for k, v in _flat(val, f"{prefix}/{key}").items()}


def _assert_close(out, ref, rel):
    out, ref = _flat(out), _flat(ref)
    assert out.keys() == ref.keys()
    for k in ref:
        assert out[k].dtype == torch.float32, k
        err = ((out[k] - ref[k]).abs().max() / ref[k].abs().max()).item()
        assert err <= rel, f"{k}: relative error {err:.2e} > {rel:.0e}"


def test_fold_is_exact_in_float64():
    model = _model().double()
    folded = copy.deepcopy(model)
    n_bn = sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert fold_frozen_batch_norms(folded) == n_bn == 20  # resnet18: stem 1 + 8 blocks x 2 + 3 downsamples
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in folded.modules())
    images = [x.double() for x in _images()]
    with torch.no_grad():
        feats_ref, feats = model.backbone[0].body(images[0][None]), folded.backbone[0].body(images[0][None])
        for k in feats_ref:
            torch.testing.assert_close(feats[k], feats_ref[k], rtol=1e-12, atol=1e-12)
        out, ref = folded(images), model(images)
    for k, v in _flat(ref).items():
        torch.testing.assert_close(_flat(out)[k], v, rtol=1e-10, atol=1e-10)


# default is compared by test_new_image_sizes_do_not_recompile; two-stage has box refinement
@pytest.mark.parametrize("variant", ["single-scale", "two-stage"])
def test_float32_matches_eager(variant):
    model = _model(variant)
    # dynamo's "eager" backend: the same full-graph trace with dynamic shapes as inductor
    # gets (a graph break would raise), at a fraction of the cost
    fast = optimize_for_inference(model, torch.float32, backend="eager")
    images = _images(SIZES[:2])
    with torch.no_grad():
        ref = model(images)
    _assert_close(fast(images), ref, 1e-4)


def _assert_detections_agree(out, ref, dtype):
    """Each reference query has a query in `out` with the same box and score within the
    tolerances. Matched by nearest box rather than by index: where two-stage proposals tie
    within rounding, top-k may order them differently."""
    for b, (boxes, ref_boxes) in enumerate(zip(out["pred_boxes"], ref["pred_boxes"])):
        dist, nearest = torch.cdist(ref_boxes, boxes, p=float("inf")).min(1)
        assert dist.max() <= BOX_TOL[dtype], f"image {b}: box error {dist.max():.2e}"
        scores = out["pred_logits"][b, nearest].sigmoid()
        score_err = (scores - ref["pred_logits"][b].sigmoid()).abs().max()
        assert score_err <= SCORE_TOL[dtype], f"image {b}: score error {score_err:.2e}"


# float16 has no fast CPU kernels (slow to test); it takes the same path as bfloat16
@pytest.mark.parametrize("variant, dtype", [(v, torch.bfloat16) for v in VARIANTS] + [("default", torch.float16)])
def test_half_precision_agrees_with_float32(variant, dtype):
    model = _model(variant)
    fast = optimize_for_inference(model, dtype, compile=False)
    images = _images(SIZES[1:])
    with torch.no_grad():
        ref = model(images)
    out = fast(images)
    assert all(v.dtype == torch.float32 for v in _flat(out).values())
    for layer_out, layer_ref in zip([out] + out["aux_outputs"], [ref] + ref["aux_outputs"]):
        _assert_detections_agree(layer_out, layer_ref, dtype)
    if variant == "two-stage":  # one proposal per encoder pixel, in the same order
        _assert_detections_agree(out["enc_outputs"], ref["enc_outputs"], dtype)
    # the tolerance is meaningful: half precision does change the outputs
    assert not torch.equal(out["pred_logits"], ref["pred_logits"])


def test_input_model_unchanged():
    model = _model("box-refine")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    grads = [p.requires_grad for p in model.parameters()]
    fast = optimize_for_inference(model, torch.bfloat16, compile=False)
    fast(_images())
    assert [type(m) for m in model.modules()] == types
    assert [p.requires_grad for p in model.parameters()] == grads
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert fast.model is not model
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in fast.model.modules())


def test_new_image_sizes_do_not_recompile():
    """Dynamic shapes: the first call compiles, later image sizes reuse it. Batch size 1 is
    specialised (dynamo treats sizes 0 and 1 apart), so larger batches compile once more."""
    model = _model()
    counter = CompileCounter()
    fast = optimize_for_inference(model, torch.float32, backend=counter)
    with torch.no_grad():
        for size in SIZES:
            images = _images([size])
            _assert_close(fast(images), model(images), 1e-6)
        assert counter.frame_count == 1
        for sizes in (SIZES[1:], SIZES[:2]):  # two images, padded: a NestedTensor
            batch = nested_tensor_from_tensor_list(_images(sizes))
            _assert_close(fast(batch), model(batch), 1e-6)
    assert counter.frame_count == 2


def test_inductor_float32():
    """The real compile (inductor, freezing), at a tiny size: float32 to 1e-4 relative."""
    model = _model(enc_layers=1, dec_layers=1)
    images = _images()
    with torch.no_grad():
        ref = model(images)
    _assert_close(optimize_for_inference(model, torch.float32)(images), ref, 1e-4)


def test_errors():
    model = _model()
    with pytest.raises(ValueError, match="dtype must be one of"):
        optimize_for_inference(model, torch.float64)
    with pytest.raises(ValueError, match="training mode"):
        optimize_for_inference(copy.deepcopy(model).train())
    with pytest.raises(ValueError, match="expected a float32 model"):
        optimize_for_inference(copy.deepcopy(model).double())
    with pytest.raises(TypeError, match="DeformableDETR"):
        optimize_for_inference(model.backbone)
    trainable_bn = copy.deepcopy(model)
    trainable_bn.backbone[0].body.bn1 = torch.nn.BatchNorm2d(64).eval()
    with pytest.raises(ValueError, match=r"trainable batch norm \(backbone.0.body.bn1"):
        optimize_for_inference(trainable_bn)
