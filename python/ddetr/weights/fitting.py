"""Loading an official-layout state dict into a model: strictly (inference, resuming), or
everything that fits with fresh class heads (fine-tuning on other classes)."""

from __future__ import annotations

from ..models.deformable_detr import init_class_bias
from .errors import WeightsError, first
from .variant import variant_name


def _model_variant(model) -> str:
    return variant_name(
        dict(
            two_stage=model.two_stage,
            with_box_refine=model.with_box_refine,
            num_feature_levels=model.num_feature_levels,
        )
    )


def mismatches(model, state: dict) -> tuple[list, list, list]:
    """(missing keys, unexpected keys, shape-mismatched keys) of `state` against `model`."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k, v in own.items() if k in state and state[k].shape != v.shape]
    return missing, unexpected, shapes


def _message(where, model, state, missing, unexpected, shapes, variant=None) -> str:
    own = model.state_dict()
    parts = [
        f"{where}: does not fit the model (the weights: {variant or 'another model'}; "
        f"the model: {_model_variant(model)}, {model.num_classes} classes)"
    ]
    if missing:
        parts.append(f"missing: {first(missing)}")
    if unexpected:
        parts.append(f"unexpected: {first(unexpected)}")
    if shapes:
        parts.append(
            "shapes: " + first([f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in shapes], 3)
        )
    return "; ".join(parts)


def load_strict(model, state: dict, where: str = "<state dict>", info=None) -> None:
    """Load an official-layout state dict into `model`: every key and shape must fit."""
    missing, unexpected, shapes = mismatches(model, state)
    if missing or unexpected or shapes:
        raise WeightsError(_message(where, model, state, missing, unexpected, shapes, info and info.variant))
    model.load_state_dict(state, strict=True)


def _is_class_head(key: str) -> bool:
    return key.startswith(("class_embed.", "transformer.decoder.class_embed."))


def load_matching(model, weights) -> str:
    """Fine-tuning: load `weights` (a path in either layout, or an official-layout state
    dict) into `model`, re-initialising the class heads when the class count differs (fresh
    weights, the model's own prior-probability bias). Returns a one-line summary; anything
    else that does not fit (backbone, hidden size, variant, queries) raises WeightsError."""
    if isinstance(weights, dict):
        state, where, variant = weights, "<state dict>", None
    else:
        from . import load

        state, info = load(weights)
        where, variant = info.path, info.variant
    missing, unexpected, shapes = mismatches(model, state)
    heads = [k for k in shapes if _is_class_head(k)]
    others = [k for k in shapes if not _is_class_head(k)]
    if missing or unexpected or others:
        raise WeightsError(_message(where, model, state, missing, unexpected, others, variant))
    if not heads:
        model.load_state_dict(state, strict=True)
        return f"{where}: loaded all {len(state)} tensors"
    own = model.state_dict()
    model.load_state_dict({k: own[k] if k in heads else v for k, v in state.items()}, strict=True)
    fresh = {id(m): m for m in model.class_embed}.values()  # shared heads once
    for head in fresh:
        head.reset_parameters()
        init_class_bias(head)
    old = state["class_embed.0.weight"].shape[0]
    return (
        f"{where}: loaded {len(state) - len(heads)} of {len(state)} tensors; skipped the class heads "
        f"({len(fresh)} of them, {first(heads, 2)}): {old} classes in the weights, {model.num_classes} "
        "in the model, re-initialised with the prior-probability bias"
    )
