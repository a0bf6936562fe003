"""ddetr.weights without transformers: layout and variant detection (against the official
keys of checkpoint_keys.md), exact round trips through the HF layout, every file format,
strict and fine-tuning loads, and the errors for files that do not fit."""

import os

import pytest
import torch

from ddetr import weights
from ddetr.models import build_model
from ddetr.models.deformable_detr import PRIOR_PROB
from ddetr.weights import WeightsError, build
from test_model_checkpoint import VARIANTS as OFFICIAL
from test_model_checkpoint import official_keys
from weights_cases import SMALL, VARIANTS, small_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _official_state(variant):
    """A fake official checkpoint of real sizes (zeros: all copies of a head are equal)."""
    opts, key_opts, count, _ = OFFICIAL[variant]
    return {k: torch.zeros(shape) for k, shape in official_keys(**key_opts).items()}, opts, count


@pytest.mark.parametrize("variant", list(OFFICIAL))
def test_official_checkpoint_detected(tmp_path, variant):
    state, opts, count = _official_state(variant)
    path = tmp_path / "ckpt.pth"
    torch.save({"model": state, "epoch": 49}, path)
    loaded, info = weights.load(path)
    assert info.layout == "official" and info.num_classes == 91
    assert info.variant == {"single_scale": "single-scale", "box_refine": "box-refine", "two_stage": "two-stage"}.get(
        variant, "default"
    )
    expected = dict(
        num_classes=91,
        backbone="resnet50",
        hidden_dim=256,
        nheads=8,
        enc_layers=6,
        dec_layers=6,
        dim_feedforward=1024,
        enc_n_points=4,
        dec_n_points=4,
        num_feature_levels=4,
        with_box_refine=False,
        two_stage=False,
        num_queries=300,
    )
    expected.update(opts)
    if opts.get("two_stage"):
        del expected["num_queries"]  # two-stage proposals are a count, in no tensor
    assert info.options == expected
    assert len(loaded) == count
    weights.load_strict(build_model(**info.options), loaded, info.path, info)


@pytest.mark.parametrize("route", ["transformers", "timm"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_round_trip_official_hf_official_is_exact(tmp_path, variant, route):
    state = small_model(variant).state_dict()
    weights.files.write_state(state, str(tmp_path / "a.pth"))
    weights.convert(tmp_path / "a.pth", tmp_path / "hf", to="hf", backbone=route)
    hf_state, _, _ = weights.files.read(str(tmp_path / "hf"))
    if route == "timm":  # the names hub files carry
        assert "model.backbone.conv_encoder.model.layer1.0.conv1.weight" in hf_state
    else:
        assert "model.backbone.conv_encoder.model.embedder.embedder.convolution.weight" in hf_state
    assert "model.decoder.layers.1.self_attn.q_proj.weight" in hf_state
    assert not any(k.startswith(("transformer.", "backbone.0")) for k in hf_state)
    back, info = weights.load(tmp_path / "hf")
    assert info.layout == "hf" and info.backbone_route == route and info.variant == variant
    assert back.keys() == state.keys()
    assert all(torch.equal(back[k], state[k]) for k in state)
    weights.convert(tmp_path / "hf", tmp_path / "b.pth", to="official")
    again, _ = weights.load(tmp_path / "b.pth")
    assert all(torch.equal(again[k], state[k]) for k in state)


@pytest.mark.parametrize("fmt", ["pth", "bin", "safetensors"])
def test_file_formats(tmp_path, fmt):
    if fmt == "safetensors":
        pytest.importorskip("safetensors", reason="safetensors is an optional dependency")
    model = small_model("box-refine")
    state = model.state_dict()
    path = str(tmp_path / f"w.{fmt}")
    if fmt == "bin":  # a bare state dict, as HF's pytorch_model.bin
        weights.files.write_state(weights.official_to_hf(state, "timm", "x"), path, wrap=False)
    else:
        weights.files.write_state(state, path)
    loaded, info = weights.load(path)
    assert info.layout == ("hf" if fmt == "bin" else "official")
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_ddp_prefix_and_shared_heads_saved_once(tmp_path):
    state = small_model("default").state_dict()
    # DistributedDataParallel's prefix, and the shared head saved once (as 5.x save_pretrained does)
    trimmed = {f"module.{k}": v for k, v in state.items() if not k.startswith(("class_embed.1", "bbox_embed.1"))}
    torch.save(trimmed, tmp_path / "w.pth")
    loaded, info = weights.load(tmp_path / "w.pth")
    assert loaded.keys() == state.keys() and torch.equal(loaded["class_embed.1.weight"], state["class_embed.0.weight"])


def test_build_with_weights_fills_options(tmp_path):
    model = small_model("single-scale", num_classes=7)
    weights.files.write_state(model.state_dict(), str(tmp_path / "w.pth"))
    weights.convert(tmp_path / "w.pth", tmp_path / "hf", to="hf")
    for path in (tmp_path / "w.pth", tmp_path / "hf"):
        built, criterion, _ = build(weights=path)
        assert built.num_feature_levels == 1 and built.num_classes == 7 and criterion.num_classes == 7
        assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(), model.state_dict().values()))


def test_variant_mismatch_is_one_clear_error(tmp_path):
    weights.files.write_state(small_model("box-refine").state_dict(), str(tmp_path / "refine.pth"))
    with pytest.raises(WeightsError) as e:
        build(weights=tmp_path / "refine.pth", with_box_refine=False)
    msg = str(e.value)
    assert msg.startswith(str(tmp_path / "refine.pth")) and "box-refine" in msg and "default" in msg
    assert "unexpected: transformer.decoder.bbox_embed.0.layers.0.bias" in msg and len(msg) < 800


def test_shape_mismatch_names_first_keys_only(tmp_path):
    weights.files.write_state(small_model("default").state_dict(), str(tmp_path / "w.pth"))
    with pytest.raises(WeightsError) as e:
        build(weights=tmp_path / "w.pth", hidden_dim=96)
    msg = str(e.value)
    assert "shapes: " in msg and "(64,) vs model (96,)" in msg and "in all)" in msg and len(msg) < 800


@pytest.mark.parametrize("content", ["random", "truncated", "not_a_state_dict", "unrelated", "truncated_safetensors"])
def test_bad_files(tmp_path, content):
    good = small_model("default").state_dict()
    path = str(tmp_path / ("w.safetensors" if "safetensors" in content else "w.pth"))
    if content == "random":
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
    elif content.startswith("truncated"):
        if "safetensors" in content:
            pytest.importorskip("safetensors", reason="safetensors is an optional dependency")
        weights.files.write_state(good, path)
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
    elif content == "not_a_state_dict":
        torch.save([1, 2, 3], path)
    else:
        torch.save({"encoder.weight": torch.zeros(3), "head.bias": torch.zeros(2)}, path)
    expected = {"unrelated": "neither the official nor the HF layout", "not_a_state_dict": "not a state dict"}.get(
        content, "cannot read weights"
    )
    with pytest.raises(WeightsError, match=expected) as e:
        weights.load(path)
    assert str(e.value).startswith(path) and len(str(e.value)) < 600


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        weights.load(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="a folder without"):
        weights.load(tmp_path)


def test_aliases_that_disagree_are_refused(tmp_path):
    state = dict(small_model("default").state_dict())
    state["class_embed.1.bias"] = state["class_embed.1.bias"] + 1  # one shared head, two values
    torch.save(state, tmp_path / "w.pth")
    with pytest.raises(WeightsError, match="one module"):
        weights.load(tmp_path / "w.pth")


@pytest.mark.parametrize("variant", ["default", "box-refine", "two-stage"])
def test_fine_tune_reinitialises_class_heads_only(tmp_path, variant):
    source = small_model(variant, num_classes=91)
    weights.files.write_state(source.state_dict(), str(tmp_path / "w.pth"))
    torch.manual_seed(1)
    target = build_model(**dict(SMALL, **VARIANTS[variant], num_classes=3))
    for h in target.class_embed:  # a head that is not fresh: load_matching must re-initialise it
        torch.nn.init.constant_(h.bias, 5.0)
    summary = weights.load_matching(target, str(tmp_path / "w.pth"))
    assert "\n" not in summary and "class heads" in summary and "91 classes" in summary and "3 in the model" in summary
    prior = -torch.log(torch.tensor((1 - PRIOR_PROB) / PRIOR_PROB))
    assert all(torch.allclose(h.bias, prior.expand(3)) for h in target.class_embed)
    src, own = source.state_dict(), target.state_dict()
    assert all(torch.equal(own[k], src[k]) for k in own if "class_embed" not in k)
    if variant == "default":
        assert all(h is target.class_embed[0] for h in target.class_embed)


def test_fine_tune_trains():
    source = small_model("default", num_classes=91)
    target = build_model(**dict(SMALL, num_classes=3))
    weights.load_matching(target, source.state_dict())
    from ddetr.models import build_criterion

    criterion = build_criterion(**dict(SMALL, num_classes=3))
    target.train()
    opt = torch.optim.AdamW([p for p in target.parameters() if p.requires_grad], lr=1e-3)
    images = [torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    targets = [
        {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.4, 0.4]])},
        {"labels": torch.tensor([2, 0]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.7, 0.6, 0.3, 0.5]])},
    ]
    losses = []
    torch.manual_seed(0)
    for _ in range(6):
        out = criterion(target(images), targets)
        loss = sum(out[k] * criterion.weight_dict[k] for k in out if k in criterion.weight_dict)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("what", ["hidden", "queries", "variant"])
def test_fine_tune_refuses_anything_but_class_count(what):
    source = small_model("default", num_classes=91).state_dict()
    other = {"hidden": dict(hidden_dim=96), "queries": dict(num_queries=20), "variant": dict(with_box_refine=True)}[
        what
    ]
    target = build_model(**dict(SMALL, num_classes=3, **other))
    with pytest.raises(WeightsError, match="does not fit"):
        weights.load_matching(target, source)


def test_learned_position_embedding_reads_but_has_no_hf_name(tmp_path):
    model = small_model("default", position_embedding="learned")
    weights.files.write_state(model.state_dict(), str(tmp_path / "w.pth"))
    built, _, _ = build(weights=tmp_path / "w.pth")
    assert built.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(WeightsError, match="no HF name: backbone.1.col_embed.weight"):
        weights.convert(tmp_path / "w.pth", tmp_path / "hf", to="hf")
