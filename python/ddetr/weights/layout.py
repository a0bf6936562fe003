"""Telling the official layout from the HF one, converting between them, and reading the
variant and the model options off the tensors."""

from __future__ import annotations

import re

import torch

from .errors import WeightsError, first
from .names import BACKBONES, TRANSFORMER, find, format_name, hub_name

_ANY_BACKBONE = BACKBONES["transformers"] + BACKBONES["timm"]  # specific names before timm's catch-all


def strip_wrappers(state: dict) -> dict:
    """Drop the `module.` prefix that DistributedDataParallel adds, and step counters
    (`num_batches_tracked`) that frozen batch norm has no use for."""
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module.") :]: v for k, v in state.items()}
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def detect_layout(state: dict) -> str | None:
    if "transformer.level_embed" in state:
        return "official"
    if "model.level_embed" in state:
        return "hf"
    return None


def backbone_route(hf_state: dict) -> str:
    """'transformers' (its own ResNet's names) or 'timm' (torchvision's names, hub files)."""
    hf_state = {hub_name(k) for k in hf_state}
    return "transformers" if any(".embedder.embedder." in k for k in hf_state) else "timm"


def hf_to_official(state: dict, where: str) -> dict:
    out, chunks, unknown = {}, {}, []
    for key, tensor in state.items():
        key = hub_name(key)
        rule, values = find(TRANSFORMER + _ANY_BACKBONE, "hf", key)
        if rule is None:
            unknown.append(key)
        elif rule.split:
            chunks.setdefault(format_name(rule.official, values), {})[values["qkv"]] = tensor
        else:
            out[format_name(rule.official, values)] = tensor
    if unknown:
        raise WeightsError(f"{where}: HF-layout keys of no known Deformable DETR name: {first(unknown)}")
    for key, parts in chunks.items():
        if len(parts) != 3:
            raise WeightsError(f"{where}: {key} needs q_proj, k_proj and v_proj, found {sorted(parts)}")
        out[key] = torch.cat([parts[p] for p in ("q", "k", "v")])
    return complete_heads(out, where)


def official_to_hf(state: dict, route: str, where: str) -> dict:
    if route not in BACKBONES:
        raise ValueError(f"backbone route must be one of {sorted(BACKBONES)}, got {route!r}")
    out, unknown = {}, []
    for key, tensor in complete_heads(state, where).items():
        rule, values = find(TRANSFORMER + BACKBONES[route], "official", key)
        if rule is None:
            unknown.append(key)
        elif rule.split:
            for part, chunk in zip(rule.split, tensor.chunk(len(rule.split))):
                out[format_name(rule.hf, dict(values, qkv=part))] = chunk
        else:
            out[format_name(rule.hf, values)] = tensor
    if unknown:
        raise WeightsError(f"{where}: official-layout keys with no HF name: {first(unknown)}")
    return out


def indices(state: dict, prefix: str) -> list[int]:
    rx = re.compile(re.escape(prefix) + r"\.(\d+)\.")
    return sorted({int(m.group(1)) for k in state if (m := rx.match(k))})


def _module(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN equal to NaN: a checkpoint with broken weights still has its tied heads
    tied (what is broken is said later, by name)."""
    return a.shape == b.shape and torch.isclose(a, b, rtol=0, atol=0, equal_nan=True).all().item()


def complete_heads(state: dict, where: str) -> dict:
    """Every name under which the model holds its heads, each filled from a name that holds
    the same module (checkpoints and save_pretrained folders keep some of them only), and
    an error if two names of one module hold different values."""
    state = dict(state)
    layers = indices(state, "transformer.decoder.layers")
    two_stage = "transformer.enc_output.weight" in state
    refine = two_stage or bool(indices(state, "transformer.decoder.bbox_embed"))
    n = len(layers) + two_stage
    # (names of one module, names to read it from when all are missing): without refinement
    # all heads are one module, with it each index is its own; transformers 5.x ties the
    # class heads of box refinement to head 0 and saves that one only.
    groups = []
    for head in ("class_embed", "bbox_embed"):
        decoder_alias = (head == "bbox_embed" and refine) or (head == "class_embed" and two_stage)
        if not refine:
            groups.append(([f"{head}.{i}." for i in range(n)], []))
            continue
        for i in range(n):
            names = [f"{head}.{i}."] + ([f"transformer.decoder.{head}.{i}."] if decoder_alias else [])
            tied = head == "class_embed" and not two_stage and i > 0
            groups.append((names, [f"{head}.0."] if tied else []))
    for names, fallback in groups:
        present = [p for p in names + fallback if _module(state, p)]
        if not present:
            raise WeightsError(f"{where}: no weights for the head {names[0].rstrip('.')}")
        value = _module(state, present[0])
        for p in names:
            other = _module(state, p)
            if not other:
                state.update({p + k: v for k, v in value.items()})
            elif other.keys() != value.keys() or any(not _same(other[k], value[k]) for k in value):
                raise WeightsError(
                    f"{where}: {present[0].rstrip('.')} and {p.rstrip('.')} are one module "
                    "in this variant but hold different values"
                )
    return state
