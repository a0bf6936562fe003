"""The variant and the model options that an official-layout state dict implies, read off
its keys and shapes."""

from __future__ import annotations

from ..models.config import EXPANSION, RESNETS
from .errors import WeightsError
from .layout import indices

DEFAULT_HEADS = 8  # not in the tensors: heads x points is (see `describe`)


def variant_name(options: dict) -> str:
    base = "two-stage" if options["two_stage"] else "box-refine" if options["with_box_refine"] else "default"
    if options["num_feature_levels"] == 1:
        return "single-scale" if base == "default" else f"single-scale {base}"
    return base


def backbone_name(state: dict, where: str) -> str:
    body = "backbone.0.body"
    depths = tuple(len(indices(state, f"{body}.layer{s}")) for s in range(1, 5))
    expansion = 4 if any(k.startswith(f"{body}.layer1.0.conv3.") for k in state) else 1
    for name, (block, d) in RESNETS.items():
        if d == depths and EXPANSION[block] == expansion:
            return name
    raise WeightsError(
        f"{where}: a ResNet backbone with blocks {depths} "
        f"({'bottleneck' if expansion == 4 else 'basic'}) is none of {sorted(RESNETS)}"
    )


def describe(state: dict, where: str, nheads: int | None = None) -> dict:
    """ddetr model options (names as in ddetr.models.DEFAULTS). `nheads` is not in the
    tensors (only heads x points is): it comes from an HF config, else the default 8."""
    try:
        levels, hidden = state["transformer.level_embed"].shape
        two_stage = "transformer.enc_output.weight" in state
        nheads = nheads or DEFAULT_HEADS
        opts = dict(
            num_classes=state["class_embed.0.weight"].shape[0],
            backbone=backbone_name(state, where),
            num_feature_levels=levels,
            hidden_dim=hidden,
            nheads=nheads,
            enc_layers=len(indices(state, "transformer.encoder.layers")),
            dec_layers=len(indices(state, "transformer.decoder.layers")),
            dim_feedforward=state["transformer.encoder.layers.0.linear1.weight"].shape[0],
            with_box_refine=two_stage or "transformer.decoder.bbox_embed.0.layers.0.weight" in state,
            two_stage=two_stage,
        )
        for part, attn, name in (("encoder", "self_attn", "enc_n_points"), ("decoder", "cross_attn", "dec_n_points")):
            rows = state[f"transformer.{part}.layers.0.{attn}.attention_weights.weight"].shape[0]
            if rows % (nheads * levels):
                raise WeightsError(
                    f"{where}: {part} attention weights of {rows} rows do not split into "
                    f"{nheads} heads x {levels} levels"
                )
            opts[name] = rows // (nheads * levels)
        if "backbone.1.row_embed.weight" in state:  # ddetr-trained only: official weights are sine
            opts["position_embedding"] = "learned"
        if not two_stage:  # two-stage proposals are a count, no tensor
            opts["num_queries"] = state["query_embed.weight"].shape[0]
    except KeyError as e:
        raise WeightsError(f"{where}: no {e.args[0]} (an incomplete Deformable DETR state dict)") from None
    return opts
