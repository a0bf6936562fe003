"""Reading and writing weights files: torch pickles (.pth, .pt, .bin), safetensors (an
optional dependency), and HF folders (config.json + weights, sharded or not)."""

from __future__ import annotations

import argparse
import json
import os

import torch

from .errors import WeightsError

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _safetensors(path: str):
    try:
        import safetensors.torch
    except ImportError:
        raise WeightsError(
            f"{path}: reading or writing .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    return safetensors.torch


def _read_file(path: str) -> tuple[dict, dict | None]:
    """(state dict, the checkpoint's training options `args` as a dict, or None)."""
    args = None
    try:
        if path.endswith(".safetensors"):
            obj = _safetensors(path).load_file(path, device="cpu")
        else:  # official checkpoints keep their training options as an argparse.Namespace
            with torch.serialization.safe_globals([argparse.Namespace]):
                obj = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:  # noqa: BLE001 - a truncated or corrupt file fails in many ways
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: cannot read weights (truncated or corrupt?): {reason}") from None
    if isinstance(obj, dict):
        if isinstance(obj.get("args"), (dict, argparse.Namespace)):
            args = dict(vars(obj["args"]) if isinstance(obj["args"], argparse.Namespace) else obj["args"])
        for wrapper in ("model", "state_dict"):  # official / ddetr checkpoints, Lightning-style
            if isinstance(obj.get(wrapper), dict):
                obj = obj[wrapper]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(
            f"{path}: not a state dict (a dict of tensors, or a checkpoint holding one "
            f"under 'model'), got {type(obj).__name__}"
        )
    return obj, args


def read(path: str) -> tuple[dict, dict | None, dict | None]:
    """(state dict, config.json as a dict or None, a checkpoint's `args` as a dict or None).
    `path`: a weights file, or an HF folder (config.json beside model.safetensors,
    pytorch_model.bin or a sharded index)."""
    path = os.fspath(path)
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isdir(path):
        found = [n for n in HF_WEIGHTS + HF_INDEXES if os.path.isfile(os.path.join(path, n))]
        if not found:
            raise WeightsError(f"{path}: a folder without {' or '.join(HF_WEIGHTS + HF_INDEXES)}")
        file = os.path.join(path, found[0])
    elif os.path.isfile(path):
        file = path
    else:
        raise WeightsError(f"{path}: no such file or folder")
    if file.endswith(".index.json"):
        with open(file) as f:
            shards = sorted(set(json.load(f)["weight_map"].values()))
        state, args = {}, None
        for shard in shards:
            state.update(_read_file(os.path.join(folder, shard))[0])
    else:
        state, args = _read_file(file)
    config = None
    config_path = os.path.join(folder, "config.json")
    if os.path.basename(file) in HF_WEIGHTS + HF_INDEXES and os.path.isfile(config_path):
        try:
            with open(config_path) as f:
                config = json.load(f)
        except (OSError, ValueError) as e:
            raise WeightsError(f"{config_path}: not a readable JSON config: {e}") from None
    return state, config, args


def _unshared(state: dict) -> dict:
    # safetensors refuses tensors that share memory (tied heads, q/k/v chunks): own copies
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def write_state(state: dict, path: str, wrap: bool = True, args: dict | None = None) -> None:
    """A .safetensors file (flat), or a torch pickle ({'model': state} when `wrap`, as
    official checkpoints, plus {'args': args} when given: the model options and class names
    that the tensors cannot tell)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if path.endswith(".safetensors"):
        _safetensors(path).save_file(_unshared(state), path, metadata={"format": "pt"})
    else:
        torch.save(({"model": state, **({"args": args} if args else {})}) if wrap else state, path)


def write_hf_folder(state: dict, config: dict, folder: str, safetensors: bool = True) -> str:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    path = os.path.join(folder, HF_WEIGHTS[0] if safetensors else HF_WEIGHTS[1])
    write_state(_unshared(state), path, wrap=False)
    return path
