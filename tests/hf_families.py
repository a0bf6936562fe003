"""Tiny, random, offline HF transformers models of every family with multi-scale deformable
attention, for the integration tests: a few thousand parameters each, 64x64 images (96 where
a fourth level needs room), every parameter moved off its initial value so the sampling
locations fall between pixels and nothing is trivially zero.

Each family: how to build it, its inputs, its group (A: the `MultiScaleDeformableAttention`
layer; B: mask2former/oneformer's function; C: the v2 core) and its number of deformable
attention layers. A family the installed transformers lacks is skipped by `build`.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from weights_cases import perturb


@dataclass(frozen=True)
class Family:
    config: object  # (transformers) -> the model; may raise AttributeError for an absent class
    group: str
    layers: int
    size: int = 64
    text: str = ""  # the extra text inputs: "ids", "task", "omdet"


def _resnet(t):
    return t.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip


def _rt_resnet(t):
    return t.RTDetrResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16, 16, 16], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
    )  # fmt: skip


def _hgnet(t, stages=("stage2", "stage3", "stage4")):
    return t.HGNetV2Config(
        stem_channels=[3, 8, 8], embeddings_size=8, hidden_sizes=[16] * 4, depths=[1] * 4,
        stage_in_channels=[8, 16, 16, 16], stage_mid_channels=[8] * 4, stage_out_channels=[16] * 4,
        stage_num_blocks=[1] * 4, stage_downsample=[False, True, True, True],
        stage_light_block=[False, False, True, True], stage_kernel_size=[3, 3, 5, 5],
        stage_numb_of_layers=[1] * 4, out_features=list(stages),
    )  # fmt: skip


def _swin(t, image_size=64, out=(2, 3, 4)):
    return t.SwinConfig(
        image_size=image_size, embed_dim=8, depths=[1] * 4, num_heads=[1] * 4, window_size=2, out_indices=list(out)
    )


# RT-DETR's shape, shared by rt_detr, rt_detr_v2, d_fine, deimv2 and pp_doclayout_*
_RT = dict(
    encoder_hidden_dim=32, encoder_in_channels=[16, 16, 16], encoder_layers=1, encoder_ffn_dim=32,
    encoder_attention_heads=2, d_model=32, num_queries=6, decoder_in_channels=[32, 32, 32], decoder_ffn_dim=32,
    decoder_layers=2, decoder_attention_heads=2, decoder_n_points=2, num_denoising=0, num_labels=3,
)  # fmt: skip
# D-FINE's X models sample [3, 6, 3] points per level: ragged lists, here [1, 3, 2]
_DFINE = dict(_RT, decoder_n_points=[1, 3, 2], hidden_expansion=0.5, depth_mult=0.34, lqe_hidden_dim=8)
_GROUNDING = dict(
    d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
    encoder_ffn_dim=16, decoder_ffn_dim=16, dropout=0.0, fusion_droppath=0.0, num_queries=5, num_feature_levels=4,
    encoder_n_points=2, decoder_n_points=3, use_timm_backbone=False, max_text_len=7,
    text_config=dict(model_type="bert", hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=8, max_position_embeddings=8, vocab_size=50),
)  # fmt: skip
_WINDOWED = dict(
    d_model=32, projector_scale_factors=[0.5, 2.0], decoder_ffn_dim=32, decoder_layers=2, decoder_n_points=2,
    decoder_self_attention_heads=2, decoder_cross_attention_heads=2, num_queries=5, group_detr=2, num_labels=3,
    dropout=0.0,
)  # fmt: skip


def _deformable_detr(t):
    return t.DeformableDetrForObjectDetection(
        t.DeformableDetrConfig(
            use_timm_backbone=False, backbone_config=_resnet(t), d_model=32, encoder_layers=1, decoder_layers=2,
            encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
            num_queries=5, num_labels=3, encoder_n_points=2, decoder_n_points=3, dropout=0.0,
        )
    )  # fmt: skip


def _mask2former(t):
    return t.Mask2FormerForUniversalSegmentation(
        t.Mask2FormerConfig(
            backbone_config=_swin(t, out=(1, 2, 3, 4)), feature_size=32, mask_feature_size=32, hidden_dim=32,
            encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=2, decoder_layers=2,
            num_attention_heads=2, num_queries=5, num_labels=3,
        )
    )  # fmt: skip


def _oneformer(t):
    return t.OneFormerForUniversalSegmentation(
        t.OneFormerConfig(
            backbone_config=_swin(t, out=(1, 2, 3, 4)), text_encoder_vocab_size=50, num_queries=6, num_labels=3,
            encoder_feedforward_dim=32, dim_feedforward=32, encoder_layers=2, decoder_layers=2,
            num_attention_heads=2, hidden_dim=32, mask_dim=32, conv_dim=32, text_encoder_width=32, task_seq_len=8,
            max_seq_len=8, text_encoder_context_length=8, text_encoder_n_ctx=2, text_encoder_num_layers=1,
            dropout=0.0,
        )
    )  # fmt: skip


def _omdet(t):
    # class_embed_dim must differ from the decoder's width (transformers builds task_project only then)
    text = dict(
        model_type="clip_text_model", hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=16, max_position_embeddings=8, vocab_size=50, bos_token_id=0, eos_token_id=1,
        pad_token_id=1,
    )  # fmt: skip
    backbone = dict(model_type="swin", embed_dim=8, depths=(1,) * 4, num_heads=(1,) * 4, window_size=2, image_size=64)
    return t.OmDetTurboForObjectDetection(
        t.OmDetTurboConfig(
            text_config=text, backbone_config=dict(backbone, out_indices=(2, 3, 4)), use_timm_backbone=False,
            apply_layernorm_after_vision_backbone=False, image_size=64, encoder_in_channels=(16, 32, 64),
            num_queries=5, encoder_layers=1, encoder_projection_indices=[2], encoder_attention_heads=2,
            decoder_num_layers=2, decoder_num_heads=2, decoder_num_points=2, num_feature_levels=3,
            encoder_dim_feedforward=16, task_encoder_hidden_dim=16, decoder_dim_feedforward=16, class_embed_dim=16,
            text_projection_in_dim=16, text_projection_out_dim=16, encoder_hidden_dim=32, decoder_hidden_dim=32,
            vision_features_channels=[32, 32, 32],
        )
    )  # fmt: skip


def _lw_detr(t):
    backbone = t.LwDetrViTConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, window_block_indices=[0], out_indices=[1],
        num_windows=4, image_size=64, dropout_prob=0.0,
    )  # fmt: skip
    return t.LwDetrForObjectDetection(t.LwDetrConfig(backbone_config=backbone, **_WINDOWED))


def _rf_detr(t):
    backbone = t.RfDetrDinov2Config(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, image_size=56, patch_size=14, num_windows=2,
        out_indices=[1, 2], num_register_tokens=0,
    )  # fmt: skip
    return t.RfDetrForObjectDetection(t.RfDetrConfig(backbone_config=backbone, intermediate_size=16, **_WINDOWED))


def _pp_doclayout_v2(t):
    reading_order = dict(
        hidden_size=32, num_attention_heads=2, intermediate_size=32, num_hidden_layers=1, coordinate_size=11,
        shape_size=10, global_pointer_head_size=8, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    config = t.PPDocLayoutV2Config(
        backbone_config=_hgnet(t), class_thresholds=[0.5] * 3, class_order=[0, 1, 2],
        reading_order_config=reading_order, **_RT,
    )  # fmt: skip
    return t.PPDocLayoutV2ForObjectDetection(config)


def _pp_doclayout_v3(t):
    config = t.PPDocLayoutV3Config(
        backbone_config=_hgnet(t, ("stage1", "stage2", "stage3", "stage4")), mask_feature_channels=[16, 16],
        x4_feat_dim=16, num_prototypes=4, global_pointer_head_size=8, **_RT,
    )  # fmt: skip
    return t.PPDocLayoutV3ForObjectDetection(config)


FAMILIES = {
    # group A: the MultiScaleDeformableAttention layer
    "deformable_detr": Family(_deformable_detr, "A", 3, size=96),  # 96: no 1x1 map at its fourth level
    "grounding_dino": Family(
        lambda t: t.GroundingDinoForObjectDetection(t.GroundingDinoConfig(backbone_config=_swin(t, 96), **_GROUNDING)),
        "A",
        3,
        size=96,
        text="ids",
    ),  # fmt: skip
    "mm_grounding_dino": Family(
        lambda t: t.MMGroundingDinoForObjectDetection(
            t.MMGroundingDinoConfig(backbone_config=_swin(t, 96), **_GROUNDING)
        ),
        "A",
        3,
        size=96,
        text="ids",
    ),  # fmt: skip
    "rt_detr": Family(
        lambda t: t.RTDetrForObjectDetection(t.RTDetrConfig(backbone_config=_rt_resnet(t), **_RT)), "A", 2
    ),
    "omdet_turbo": Family(_omdet, "A", 2, text="omdet"),
    "lw_detr": Family(_lw_detr, "A", 2),
    "rf_detr": Family(_rf_detr, "A", 2, size=56),
    "pp_doclayout_v2": Family(_pp_doclayout_v2, "A", 2),
    "pp_doclayout_v3": Family(_pp_doclayout_v3, "A", 2),
    "pp_doclayout_v4": Family(
        lambda t: t.PPDocLayoutV4ForObjectDetection(t.PPDocLayoutV4Config(backbone_config=_hgnet(t), **_RT)), "A", 2
    ),
    # group B: mask2former's and oneformer's module-level function
    "mask2former": Family(_mask2former, "B", 2),
    "oneformer": Family(_oneformer, "B", 2, text="task"),
    # group C: the v2 core (rt_detr_v2: a module-level function; d_fine, deimv2: per instance)
    "rt_detr_v2": Family(
        lambda t: t.RTDetrV2ForObjectDetection(t.RTDetrV2Config(backbone_config=_rt_resnet(t), **_RT)), "C", 2
    ),
    "d_fine": Family(lambda t: t.DFineForObjectDetection(t.DFineConfig(backbone_config=_hgnet(t), **_DFINE)), "C", 2),
    "deimv2": Family(lambda t: t.Deimv2ForObjectDetection(t.Deimv2Config(backbone_config=_hgnet(t), **_DFINE)), "C", 2),
}


def import_transformers():
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (the hf extra)")
    transformers.utils.logging.set_verbosity_error()
    return transformers


@functools.cache
def _pristine(name: str, **config):
    transformers = import_transformers()
    torch.manual_seed(0)
    try:
        model = FAMILIES[name].config(transformers)
    except AttributeError as e:  # a family this transformers version lacks
        pytest.skip(f"{name}: not in transformers {transformers.__version__} ({e})")
    for key, value in config.items():
        for module in model.modules():
            if hasattr(module, key):
                setattr(module, key, value)
    perturb(model.state_dict().items(), scale=0.1)
    return model.eval()


def build(name: str, **attributes) -> torch.nn.Module:
    """A fresh copy of family `name`'s tiny model in eval mode (built once per session);
    `attributes` are set on every submodule that has them (e.g. decoder_method="discrete")."""
    return copy.deepcopy(_pristine(name, **attributes))


def inputs(name: str, batch: int = 2) -> dict:
    """Random inputs for family `name` (fixed seed)."""
    family = FAMILIES[name]
    g = torch.Generator().manual_seed(1)
    x = dict(pixel_values=torch.randn(batch, 3, family.size, family.size, generator=g))
    if family.text == "ids":
        x["input_ids"] = torch.randint(1, 50, (batch, 7), generator=g)
    elif family.text == "task":
        x["task_inputs"] = torch.randint(1, 50, (batch, 8), generator=g)
    elif family.text == "omdet":
        x["tasks_input_ids"] = torch.randint(1, 50, (batch, 7), generator=g)
        x["tasks_attention_mask"] = torch.ones(batch, 7, dtype=torch.long)
        x["classes_input_ids"] = torch.randint(1, 50, (3 * batch, 7), generator=g)
        x["classes_attention_mask"] = torch.ones(3 * batch, 7, dtype=torch.long)
        x["classes_structure"] = torch.full((batch,), 3, dtype=torch.long)
    return x


def float_outputs(output) -> list:
    """Every floating-point tensor in a model output (nested tuples and lists included)."""
    if isinstance(output, torch.Tensor):
        return [output] if output.is_floating_point() else []
    if hasattr(output, "to_tuple"):
        output = output.to_tuple()
    if isinstance(output, (tuple, list)):
        return [t for item in output for t in float_outputs(item)]
    return []


class CountOp(TorchDispatchMode):
    """Counts forward calls of ddetr's op (ms_deform_attn and any generalised form) and
    records the dtypes of their value inputs."""

    def __init__(self):
        super().__init__()
        self.calls, self.dtypes = 0, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func._schema.name
        if name.startswith("ddetr::ms_deform_attn") and "backward" not in name:
            self.calls += 1
            self.dtypes.add(args[0].dtype)
        return func(*args, **(kwargs or {}))


def rel_err(ours, theirs) -> float:
    return ((ours - theirs).abs().max() / theirs.abs().max().clamp_min(1e-30)).item()
