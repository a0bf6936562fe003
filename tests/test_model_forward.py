"""The full model: output shapes and the initial boxes (each layer's reference box) of the
four variants on padded batches of mixed sizes, gradient flow, input forms, training on
empty targets, the default config."""

import pytest
import torch

from conftest import TINY_MODEL, VARIANTS
from ddetr.models import build, build_model
from ddetr.util.misc import NestedTensor, nested_tensor_from_tensor_list

TINY = dict(TINY_MODEL, num_classes=7)  # 20 queries x 7 classes: PostProcess's 100 detections
SIZES = [(64, 96), (48, 64), (56, 80)]


pytestmark = pytest.mark.usefixtures("one_thread")


def _images(seed=0, sizes=SIZES):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(3, h, w, generator=gen) for h, w in sizes]


def _targets():
    return [
        dict(labels=torch.tensor([1, 6]), boxes=torch.tensor([[0.5, 0.5, 0.3, 0.4], [0.2, 0.3, 0.1, 0.2]])),
        dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4)),
        dict(labels=torch.tensor([0]), boxes=torch.tensor([[0.7, 0.6, 0.4, 0.5]])),
    ]


def _tiny(variant, **kw):
    torch.manual_seed(0)
    return build(**dict(TINY, **VARIANTS[variant], **kw))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_and_initial_boxes(variant):
    model, criterion, post = _tiny(variant)
    model.eval()
    with torch.no_grad():
        out = model(nested_tensor_from_tensor_list(_images()))
    b, q, c = 3, TINY["num_queries"], TINY["num_classes"]
    assert out["pred_logits"].shape == (b, q, c) and out["pred_boxes"].shape == (b, q, 4)
    assert torch.isfinite(out["pred_logits"]).all()
    assert len(out["aux_outputs"]) == TINY["dec_layers"] - 1
    layers = [*out["aux_outputs"], out]
    for aux in out["aux_outputs"]:
        assert aux["pred_logits"].shape == (b, q, c) and aux["pred_boxes"].shape == (b, q, 4)
    # The box heads start at zero (official init): every layer predicts its reference box.
    if variant == "two-stage":
        enc = out["enc_outputs"]
        levels = [(8, 12), (4, 6), (2, 3), (1, 2)]  # strides 8..64 of the 64x96 canvas
        s = sum(h * w for h, w in levels)
        assert enc["pred_logits"].shape == (b, s, c) and enc["pred_boxes"].shape == (b, s, 4)
        # proposals: one box per encoder pixel, 0.05 * 2^level wide and high (1 where disabled)
        size = torch.cat([torch.full((h * w,), 0.05 * 2**lvl) for lvl, (h, w) in enumerate(levels)])
        wh = enc["pred_boxes"][..., 2:]
        valid = (enc["pred_boxes"] < 1).all(-1)
        assert valid.any(-1).all()
        assert torch.allclose(wh[valid], size.expand(b, -1)[valid][:, None].expand(-1, 2), rtol=1e-4)
        # the queries start from proposals, and no layer moves them
        for layer in layers:
            dist = torch.cdist(layer["pred_boxes"], enc["pred_boxes"])  # (b, q, s)
            assert (dist.min(-1).values < 1e-3).all()  # proposals lie >= 0.05 apart
    else:
        assert "enc_outputs" not in out
        query_pos = model.query_embed.weight[:, : TINY["hidden_dim"]]
        centres = model.transformer.reference_points(query_pos).sigmoid()  # (q, 2), the same for each image
        expected = torch.cat([centres, torch.full((q, 2), torch.sigmoid(torch.tensor(-2.0)).item())], -1)
        for layer in layers:
            assert torch.allclose(layer["pred_boxes"], expected.expand(b, -1, -1), atol=1e-5)
    results = post["bbox"](out, torch.tensor(SIZES))
    for r, (_, w) in zip(results, SIZES):
        assert r["scores"].shape == (100,) and ((r["scores"] > 0) & (r["scores"] < 1)).all()
        assert r["labels"].min() >= 0 and r["labels"].max() < c
        bx = r["boxes"]
        assert (bx[:, 0] >= -w / 2).all() and (bx[:, 2] <= 1.5 * w).all() and (bx[:, 2] >= bx[:, 0]).all()


def _break_zero_init(model):
    """The official init zeroes some weights (attention offsets and weights, the last box layer),
    which legitimately zeroes some gradients at step 0; randomise them so every parameter's
    gradient is observable."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and (p == 0).all():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradient_reaches_every_trainable_parameter_and_no_frozen_one(variant):
    model, criterion, _ = _tiny(variant, dropout=0.0)
    _break_zero_init(model)
    model.train()
    out = model(_images())
    losses = criterion(out, _targets())
    loss = criterion.weighted_total(losses)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith(("backbone.0.body.conv1", "backbone.0.body.layer1")) for n, _ in frozen)
    assert any(n.startswith("backbone.0.body.layer4") for n, _ in trainable)
    no_grad = [n for n, p in trainable if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert all(p.grad is None for _, p in frozen)


def test_lr_backbone_zero_freezes_backbone():
    model = build_model(**TINY, lr_backbone=0)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for n, p in model.named_parameters() if not n.startswith("backbone"))


def test_input_forms_agree():
    model = _tiny("default")[0].eval()
    imgs = _images()
    with torch.no_grad():
        a = model(imgs)
        b = model(nested_tensor_from_tensor_list(imgs))
        # a single image, a (B, 3, H, W) batch (no padding) and a NestedTensor without mask
        one = torch.randn(3, 48, 64)
        d = model(one)
        e = model(one[None])
        f = model(NestedTensor(one[None], None))
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_boxes"], b["pred_boxes"])
    for x in (e, f):
        assert torch.allclose(d["pred_logits"], x["pred_logits"], atol=1e-5)


def test_padding_mask_is_used():
    # the same padded tensors with a mask claiming everything valid: the valid ratios, the
    # position embedding and the attention's value masking all change, and so do the outputs
    model = _tiny("default")[0].eval()
    _break_zero_init(model)
    batch = nested_tensor_from_tensor_list([torch.randn(3, 48, 48), torch.randn(3, 96, 96)])
    unmasked = NestedTensor(batch.tensors, torch.zeros_like(batch.mask))
    with torch.no_grad():
        masked_out = model(batch)
        unmasked_out = model(unmasked)
    assert not torch.allclose(masked_out["pred_logits"][0], unmasked_out["pred_logits"][0], atol=1e-4)
    # the unpadded image is unaffected
    assert torch.allclose(masked_out["pred_logits"][1], unmasked_out["pred_logits"][1], atol=1e-5)


def test_train_step_with_only_empty_targets():
    model, criterion, _ = _tiny("two-stage")
    empty = [dict(labels=torch.zeros(0, dtype=torch.int64), boxes=torch.zeros(0, 4))] * 2
    out = model(_images(sizes=SIZES[:2]))
    losses = criterion(out, empty)
    loss = criterion.weighted_total(losses)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.parametrize(
    "bad,match",
    [
        ([torch.rand(1, 64, 64)], r"samples\[0\] must be a \(3, H, W\) floating-point image"),
        ([torch.rand(3, 64, 64), torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8)], r"samples\[1\]"),
        ([torch.rand(64, 64)], r"samples\[0\]"),
        ([], "non-empty list"),
        ("image.jpg", "samples must be a NestedTensor"),
        (
            NestedTensor(torch.rand(1, 4, 64, 64), torch.zeros(1, 64, 64, dtype=torch.bool)),
            r"samples.tensors must be a \(B, 3, H, W\)",
        ),
        (
            NestedTensor(torch.rand(1, 3, 64, 64), torch.zeros(1, 32, 64, dtype=torch.bool)),
            r"samples.mask must be a bool",
        ),
    ],
)
def test_bad_images_rejected(bad, match):
    model = _tiny("default")[0]
    with pytest.raises(ValueError, match=match):
        model(bad)


def test_bad_options_rejected():
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['lr'\]"):
        build_model(lr=1e-4)
    with pytest.raises(ValueError, match="two_stage=True needs with_box_refine=True"):
        build_model(**TINY, two_stage=True)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model(**dict(TINY, hidden_dim=48))
    with pytest.raises(ValueError, match="num_feature_levels"):
        build_model(**TINY, num_feature_levels=0)


def test_two_stage_needs_enough_positions():
    model = _tiny("two-stage", num_queries=500)[0]
    with pytest.raises(ValueError, match="only .* positions"):
        model([torch.rand(3, 64, 64)])


def test_eval_is_deterministic():
    model = _tiny("box-refine")[0].eval()
    imgs = _images()
    with torch.no_grad():
        a, b = model(imgs), model(imgs)
    assert torch.equal(a["pred_boxes"], b["pred_boxes"])


def test_default_resnet50_config_forward():
    torch.manual_seed(0)
    model, _, post = build()
    model.eval()
    with torch.no_grad():
        out = model([torch.randn(3, 64, 96)])
    assert out["pred_logits"].shape == (1, 300, 91) and out["pred_boxes"].shape == (1, 300, 4)
    assert len(out["aux_outputs"]) == 5
    assert ((out["pred_boxes"] > 0) & (out["pred_boxes"] < 1)).all()
    # untrained heads start from the 1% prior
    assert out["pred_logits"].sigmoid().mean().item() == pytest.approx(0.01, abs=0.01)
    assert post["bbox"](out, torch.tensor([[480, 720]]))[0]["boxes"].shape == (100, 4)
