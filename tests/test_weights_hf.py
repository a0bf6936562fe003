"""ddetr.weights against the real consumer, transformers' DeformableDetrForObjectDetection:
ddetr models converted to the HF layout load there with no missing or unexpected keys and
give the same logits and boxes, and HF's own save_pretrained folders (and 5.x in-memory
state dicts) load strictly into ddetr with the same outputs. All four variants."""

import json

import pytest
import torch

from conftest import TINY_MODEL, VARIANTS
from ddetr import weights
from ddetr.models import build_model
from ddetr.weights.variant import describe
from weights_cases import NUM_CLASSES, assert_rel_close, padded_batch, perturb, small_model

transformers = pytest.importorskip(
    "transformers", reason="transformers is not installed: pip install '.[hf]' for the HF-layout tests"
)
pytest.importorskip("safetensors", reason="safetensors is not installed: pip install '.[hf]'")
pytestmark = pytest.mark.usefixtures("one_thread")


def _hf_outputs(hf_model, batch):
    with torch.no_grad():
        out = hf_model(pixel_values=batch.tensors, pixel_mask=(~batch.mask).long())  # HF: 1 = valid pixel
    return out.logits, out.pred_boxes


def _ours(model, batch):
    with torch.no_grad():
        out = model(batch)
    return out["pred_logits"], out["pred_boxes"]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_converted_model_loads_in_transformers_with_same_outputs(tmp_path, variant):
    model = small_model(variant)
    weights.files.write_state(model.state_dict(), str(tmp_path / "ddetr.pth"))
    weights.convert(
        tmp_path / "ddetr.pth",
        tmp_path / "hf",
        to="hf",
        options=dict(num_queries=TINY_MODEL["num_queries"], nheads=TINY_MODEL["nheads"]),
    )
    hf, info = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    # transformers' own ResNet, not timm: loads where timm (and torchvision) are absent
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["use_timm_backbone"] is False
    assert hf.config.backbone_config.model_type == "resnet"
    batch = padded_batch()
    assert batch.mask.any()  # the batch really is padded
    for ours, theirs in zip(_ours(model, batch), _hf_outputs(hf.eval(), batch)):
        assert ours.shape == theirs.shape
        assert_rel_close(ours, theirs)


def _hf_model(variant, tmp_path):
    """An HF model built from transformers' own config classes (not from ddetr's writer),
    every tensor moved off its initial value, saved with save_pretrained."""
    opts = dict(TINY_MODEL, **VARIANTS[variant], num_classes=NUM_CLASSES)
    levels = opts.get("num_feature_levels", 4)
    backbone = transformers.ResNetConfig(
        depths=[2, 2, 2, 2],
        hidden_sizes=[64, 128, 256, 512],
        layer_type="basic",
        out_features=["stage4"] if levels == 1 else ["stage2", "stage3", "stage4"],
    )
    config = transformers.DeformableDetrConfig(
        use_timm_backbone=False,
        backbone_config=backbone,
        num_labels=opts["num_classes"],
        d_model=opts["hidden_dim"],
        encoder_attention_heads=opts["nheads"],
        decoder_attention_heads=opts["nheads"],
        encoder_layers=opts["enc_layers"],
        decoder_layers=opts["dec_layers"],
        encoder_ffn_dim=opts["dim_feedforward"],
        decoder_ffn_dim=opts["dim_feedforward"],
        num_queries=opts["num_queries"],
        two_stage_num_proposals=opts["num_queries"],
        num_feature_levels=levels,
        with_box_refine=opts.get("with_box_refine", False),
        two_stage=opts.get("two_stage", False),
    )
    torch.manual_seed(0)
    hf = transformers.DeformableDetrForObjectDetection(config).eval()
    perturb(hf.state_dict().items())
    hf.save_pretrained(tmp_path / "hf")
    return hf


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_save_pretrained_folder_loads_strictly_into_ddetr(tmp_path, variant):
    hf = _hf_model(variant, tmp_path)
    state, info = weights.load(tmp_path / "hf")
    assert info.layout == "hf" and info.variant == variant and info.backbone_route == "transformers"
    model = build_model(**info.options).eval()
    weights.load_strict(model, state, info.path, info)
    batch = padded_batch()
    for ours, theirs in zip(_ours(model, batch), _hf_outputs(hf, batch)):
        assert_rel_close(ours, theirs)
    # 5.x in-memory names (a plain torch.save of the model's state_dict) read the same
    torch.save(hf.state_dict(), tmp_path / "in_memory.pth")
    again, info2 = weights.load(tmp_path / "in_memory.pth")
    assert info2.layout == "hf" and again.keys() == state.keys()
    assert all(torch.equal(again[k], state[k]) for k in state)


def test_timm_route_config_is_accepted():
    """The hub route: transformers parses the config (building the model would need timm)."""
    model = small_model("default")
    config = weights.to_config(describe(model.state_dict(), "x"), "timm")
    parsed = transformers.DeformableDetrConfig.from_dict(config)
    bc = parsed.backbone_config
    name = bc.get("backbone") if isinstance(bc, dict) else getattr(bc, "backbone", None)
    assert name == "resnet18" and parsed.num_labels == NUM_CLASSES


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_timm_route_loads_in_transformers_with_same_outputs(tmp_path, variant):
    """The hub route (timm's ResNet names, `use_timm_backbone`): needs timm, which needs
    torchvision, which pins its own torch: CI runs this in the torch 2.14.1 environment."""
    pytest.importorskip("timm", reason="timm is not installed (the hub route's backbone needs it)")
    model = small_model(variant)
    weights.files.write_state(model.state_dict(), str(tmp_path / "ddetr.pth"))
    options = dict(num_queries=TINY_MODEL["num_queries"], nheads=TINY_MODEL["nheads"])
    weights.convert(tmp_path / "ddetr.pth", tmp_path / "hf", to="hf", backbone="timm", options=options)
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["use_timm_backbone"] is True and not config.get("use_pretrained_backbone")
    hf, info = transformers.DeformableDetrForObjectDetection.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    batch = padded_batch()
    for ours, theirs in zip(_ours(model, batch), _hf_outputs(hf.eval(), batch)):
        assert_rel_close(ours, theirs)
    # and back: the timm-route folder reads strictly into ddetr with the same outputs
    state, back = weights.load(tmp_path / "hf")
    assert back.backbone_route == "timm"
    again = build_model(**back.options).eval()
    weights.load_strict(again, state, back.path, back)
    for a, b in zip(_ours(again, batch), _ours(model, batch)):
        assert torch.equal(a, b)
