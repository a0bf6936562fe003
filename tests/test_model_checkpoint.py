"""Checkpoint compatibility with the official Deformable DETR release: for each published
variant, the state_dict keys and shapes equal those of checkpoint_keys.md, a fake official
state_dict loads with strict=True, and the parameter counts are as published. No forward."""

import pytest
import torch

from conftest import VARIANTS
from ddetr.models import build_model
from resnet_keys import torchvision_resnet50_shapes

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(prefix, c):
    return {f"{prefix}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}


def _linear(prefix, out, inp):
    return {f"{prefix}.weight": (out, inp), f"{prefix}.bias": (out,)}


def _mlp(prefix):
    return (
        _linear(f"{prefix}.layers.0", 256, 256)
        | _linear(f"{prefix}.layers.1", 256, 256)
        | _linear(f"{prefix}.layers.2", 4, 256)
    )


def official_keys(levels=4, box_refine=False, two_stage=False):
    """The official checkpoint's keys and shapes, written out from checkpoint_keys.md."""
    k = {f"backbone.0.body.{name}": shape for name, shape in torchvision_resnet50_shapes().items()}
    k["transformer.level_embed"] = (levels, 256)

    def msda(prefix):
        return (
            _linear(f"{prefix}.sampling_offsets", 8 * levels * 4 * 2, 256)
            | _linear(f"{prefix}.attention_weights", 8 * levels * 4, 256)
            | _linear(f"{prefix}.value_proj", 256, 256)
            | _linear(f"{prefix}.output_proj", 256, 256)
        )

    def norm(prefix, c=256):
        return {f"{prefix}.weight": (c,), f"{prefix}.bias": (c,)}

    for i in range(6):
        e = f"transformer.encoder.layers.{i}"
        k |= msda(f"{e}.self_attn") | norm(f"{e}.norm1") | _linear(f"{e}.linear1", 1024, 256)
        k |= _linear(f"{e}.linear2", 256, 1024) | norm(f"{e}.norm2")
        d = f"transformer.decoder.layers.{i}"
        k |= msda(f"{d}.cross_attn") | norm(f"{d}.norm1")
        k |= {f"{d}.self_attn.in_proj_weight": (768, 256), f"{d}.self_attn.in_proj_bias": (768,)}
        k |= _linear(f"{d}.self_attn.out_proj", 256, 256) | norm(f"{d}.norm2")
        k |= _linear(f"{d}.linear1", 1024, 256) | _linear(f"{d}.linear2", 256, 1024) | norm(f"{d}.norm3")
    heads = 7 if two_stage else 6
    for i in range(heads):
        k |= _linear(f"class_embed.{i}", 91, 256) | _mlp(f"bbox_embed.{i}")
        if box_refine:
            k |= _mlp(f"transformer.decoder.bbox_embed.{i}")
        if two_stage:
            k |= _linear(f"transformer.decoder.class_embed.{i}", 91, 256)
    if two_stage:
        k |= _linear("transformer.enc_output", 256, 256) | norm("transformer.enc_output_norm")
        k |= _linear("transformer.pos_trans", 512, 512) | norm("transformer.pos_trans_norm", 512)
    else:
        k |= _linear("transformer.reference_points", 2, 256)
        k["query_embed.weight"] = (300, 512)
    in_ch = [512, 1024, 2048, 2048] if levels == 4 else [2048]
    for i, c in enumerate(in_ch):
        ks = 3 if i == 3 else 1
        k[f"input_proj.{i}.0.weight"] = (256, c, ks, ks)
        k[f"input_proj.{i}.0.bias"] = (256,)
        k |= norm(f"input_proj.{i}.1")
    return k


def _unique_learnable(keys, box_refine):
    """Parameter count from the key list: no frozen-BN buffers, each shared/aliased head once."""
    total = 0
    for name, shape in keys.items():
        if (
            ".bn" in name
            or "downsample.1" in name
            or name.startswith("transformer.decoder.class_embed")
            or name.startswith("transformer.decoder.bbox_embed")
        ):
            continue
        if not box_refine and name.startswith(("class_embed.", "bbox_embed.")) and name.split(".")[1] != "0":
            continue  # one shared module saved 6 times
        total += torch.Size(shape).numel()
    return total


OFFICIAL = {  # official_keys' options, key count, published parameter count (millions, or exact)
    "default": (dict(), 561, 40_069_665),
    "single-scale": (dict(levels=1), 549, 34.07e6),
    "box-refine": (dict(box_refine=True), 597, 40.85e6),
    "two-stage": (dict(box_refine=True, two_stage=True), 630, 41.18e6),
}


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: build_model(**VARIANTS[name]) for name in OFFICIAL}


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_keys_and_shapes_equal_official(models, variant):
    key_opts, count, _ = OFFICIAL[variant]
    expected = official_keys(**key_opts)
    got = {k: tuple(v.shape) for k, v in models[variant].state_dict().items()}
    assert len(expected) == count
    assert set(got) == set(expected), (sorted(set(got) - set(expected))[:5], sorted(set(expected) - set(got))[:5])
    assert got == expected
    assert not any("num_batches_tracked" in k or k.startswith("backbone.1") for k in got)


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_parameter_counts(models, variant):
    opts, (key_opts, _, published) = VARIANTS[variant], OFFICIAL[variant]
    model = models[variant]
    n = sum(p.numel() for p in model.parameters())  # parameters() visits shared modules once
    assert n == _unique_learnable(official_keys(**key_opts), opts.get("with_box_refine", False))
    if isinstance(published, int):
        assert n == published
    else:
        assert round(n / 1e6, 2) == round(published / 1e6, 2)
    frozen_bn = sum(b.numel() for k, b in model.named_buffers() if k.startswith("backbone."))
    assert frozen_bn == 106_240


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_fake_official_state_dict_loads_strictly(models, variant):
    opts, (key_opts, _, _) = VARIANTS[variant], OFFICIAL[variant]
    model = models[variant]
    gen = torch.Generator().manual_seed(1)
    fake = {k: torch.randn(shape, generator=gen) for k, shape in official_keys(**key_opts).items()}
    if not opts.get("with_box_refine"):
        for i in range(1, 6):  # a real checkpoint saves the shared heads' one tensor 6 times
            for k in [k for k in fake if k.startswith(("class_embed.0.", "bbox_embed.0."))]:
                fake[k.replace(".0.", f".{i}.", 1)] = fake[k]
    else:
        for k in [k for k in fake if k.startswith("transformer.decoder.") and "_embed." in k]:
            fake[k] = fake[k.replace("transformer.decoder.", "")]  # aliases of the model's heads
    result = model.load_state_dict(fake, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    state = model.state_dict()
    for k in (
        "transformer.level_embed",
        "backbone.0.body.layer3.2.bn2.running_var",
        "input_proj.0.1.weight",
        "class_embed.5.bias",
        "bbox_embed.0.layers.2.weight",
    ):
        assert torch.equal(state[k], fake[k]), k


def test_default_heads_shared_and_refine_heads_independent(models):
    d = models["default"]
    assert all(m is d.class_embed[0] for m in d.class_embed) and all(m is d.bbox_embed[0] for m in d.bbox_embed)
    assert d.transformer.decoder.bbox_embed is None
    r = models["box-refine"]
    assert len({id(m) for m in r.bbox_embed}) == 6 and r.transformer.decoder.bbox_embed is r.bbox_embed
    t = models["two-stage"]
    assert len(t.class_embed) == 7 and t.transformer.decoder.class_embed is t.class_embed
    assert not hasattr(t, "query_embed") and not hasattr(t.transformer, "reference_points")


def test_official_initialisation():
    import math

    bias = -math.log((1 - 0.01) / 0.01)
    # fresh models (the fixture's were overwritten by the loading test); the backbone is irrelevant
    d, r, t = (build_model(backbone="resnet18", **VARIANTS[v]) for v in ("default", "box-refine", "two-stage"))
    assert torch.allclose(d.class_embed[0].bias, torch.full((91,), bias))
    last = d.bbox_embed[0].layers[-1]
    assert torch.all(last.weight == 0) and last.bias.tolist() == [0, 0, -2, -2]
    assert r.bbox_embed[0].layers[-1].bias.tolist() == [0, 0, -2, -2]
    assert all(r.bbox_embed[i].layers[-1].bias.tolist() == [0, 0, 0, 0] for i in range(1, 6))
    assert all(m.layers[-1].bias.tolist() == [0, 0, 0, 0] for m in t.bbox_embed)
    assert torch.all(d.transformer.reference_points.bias == 0)
    for proj in d.input_proj:
        assert torch.all(proj[0].bias == 0) and isinstance(proj[1], torch.nn.GroupNorm) and proj[1].num_groups == 32
    attn = d.transformer.encoder.layers[0].self_attn
    assert torch.all(attn.sampling_offsets.weight == 0) and torch.all(attn.attention_weights.weight == 0)
    # the 8 directions, point i at distance i + 1: head 0 points along +x
    off = attn.sampling_offsets.bias.view(8, 4, 4, 2)
    assert off[0, 0, :, 0].tolist() == [1, 2, 3, 4] and off[0, 0, :, 1].tolist() == [0, 0, 0, 0]
