"""Reading and writing weights files: torch pickles (.pth, .pt, .bin), safetensors (an
optional dependency), and HF folders (config.json + weights, sharded or not). The one
checkpoint reader (`read_checkpoint`); every write goes through ddetr.util.files (temporary,
fsync, rename), and every file read is checked before use."""

from __future__ import annotations

import argparse
import json
import math
import os
import struct

import torch

from ..util.files import FileReadError, atomic_write, cause, load_pickle, read_json, write_json
from .errors import WeightsError

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
HF_CONFIG = "config.json"


def _safetensors(path: str):
    try:
        import safetensors.torch
    except ImportError:
        raise WeightsError(
            f"{path}: reading or writing .safetensors needs the safetensors package (pip install safetensors)"
        ) from None
    return safetensors.torch


# safetensors' dtype names and their sizes in bytes
_ST_SIZES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8,
}  # fmt: skip
_ST_MAX_HEADER = 100 << 20  # safetensors' own limit


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def check_safetensors_header(path: str) -> dict:
    """The header of a .safetensors file, every entry checked (dtype, shape, offsets inside
    the file and matching the shape), so that a truncated or foreign file is one line naming
    the entry, never the library's panic."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            n = struct.unpack("<Q", head)[0] if len(head) == 8 else None
            if n is None or n > min(size - 8, _ST_MAX_HEADER):
                raise WeightsError(f"{path}: cannot read weights: no valid .safetensors header length (truncated?)")
            raw = f.read(n)
    except OSError as e:
        raise WeightsError(f"{path}: cannot read: {cause(e)}") from None
    try:
        header = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise WeightsError(f"{path}: cannot read weights: .safetensors header is not valid JSON") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{path}: cannot read weights: .safetensors header is not a JSON object")
    data = size - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict):
                raise WeightsError(f"{path}: cannot read weights: .safetensors __metadata__ is not an object")
            continue
        where = f"{path}: cannot read weights: .safetensors entry {name!r}"
        if not isinstance(entry, dict):
            raise WeightsError(f"{where}: not an object")
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        if dtype not in _ST_SIZES:
            raise WeightsError(f"{where}: dtype {dtype!r} is none of {', '.join(_ST_SIZES)}")
        if not isinstance(shape, list) or not all(_count(d) for d in shape):
            raise WeightsError(f"{where}: shape {shape!r} is not a list of sizes >= 0")
        ok = (
            isinstance(offsets, list)
            and len(offsets) == 2
            and all(_count(o) for o in offsets)
            and offsets[0] <= offsets[1] <= data
        )
        if not ok:
            raise WeightsError(f"{where}: data_offsets {offsets!r} are not within the {data} data bytes (truncated?)")
        if offsets[1] - offsets[0] != math.prod(shape) * _ST_SIZES[dtype]:
            raise WeightsError(f"{where}: data_offsets {offsets} do not hold a {dtype} tensor of shape {shape}")
    return header


def _load_pickle(path: str):
    """util.files.load_pickle, its failures as the WeightsError every weights reader raises."""
    try:
        return load_pickle(path)
    except FileReadError as e:
        raise WeightsError(str(e)) from None


def _options(args, path: str) -> dict | None:
    """A checkpoint's training options `args` (official: an argparse.Namespace) as a dict."""
    if args is None:
        return None
    if isinstance(args, argparse.Namespace):
        args = vars(args)
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise WeightsError(f"{path}: its 'args' entry is not a dict of options, got {type(args).__name__}")
    return dict(args)


def _state_dict(obj, path: str, what: str) -> dict:
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: {what} is not a state dict (a dict of names -> tensors), got {type(obj).__name__}")
    if not all(isinstance(k, str) for k in obj):
        raise WeightsError(f"{path}: {what} has names that are not strings")
    return obj


def read_checkpoint(path: str) -> dict:
    """A training checkpoint (official or ddetr: 'model', and 'optimizer', 'lr_scheduler',
    'epoch', 'args' when it can be resumed), checked: 'model' a state dict, 'args' a dict
    (an official Namespace is turned into one), 'epoch' an integer. The one checkpoint reader."""
    path = os.fspath(path)
    ckpt = _load_pickle(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise WeightsError(f"{path}: not a ddetr / Deformable DETR checkpoint (no 'model' entry)")
    return _checkpoint(ckpt, path)


def _checkpoint(obj: dict, path: str) -> dict:
    ckpt = dict(obj)
    _state_dict(ckpt["model"], path, "its 'model' entry")
    ckpt["args"] = _options(ckpt.get("args"), path) or {}
    epoch = ckpt.get("epoch")
    if epoch is not None and (not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < -1):
        raise WeightsError(f"{path}: its 'epoch' entry is not an epoch number, got {epoch!r}")
    for key in ("optimizer", "lr_scheduler"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise WeightsError(f"{path}: its {key!r} entry is not a state dict, got {type(ckpt[key]).__name__}")
    return ckpt


def _read_file(path: str) -> tuple[dict, dict | None]:
    """(state dict, the checkpoint's training options `args` as a dict, or None)."""
    if path.endswith(".safetensors"):
        check_safetensors_header(path)
        try:
            return _safetensors(path).load_file(path, device="cpu"), None
        except WeightsError:
            raise
        except Exception as e:  # noqa: BLE001 - the header was checked: what is left is I/O
            raise WeightsError(f"{path}: cannot read weights: {cause(e)}") from None
    obj = _load_pickle(path)
    if isinstance(obj, dict) and "model" in obj:  # official / ddetr checkpoints
        ckpt = _checkpoint(obj, path)
        return ckpt["model"], ckpt["args"] or None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):  # Lightning-style
        return _state_dict(obj["state_dict"], path, "its 'state_dict' entry"), None
    return _state_dict(obj, path, "the file"), None


def _shards(index: str, folder: str) -> list:
    data = read_json(index, "weights index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise WeightsError(f"{index}: 'weight_map' missing or not an object of names -> shard files")
    shards = sorted(set(weight_map.values()))
    for s in shards:
        if os.path.basename(s) != s or not os.path.isfile(os.path.join(folder, s)):
            raise WeightsError(f"{index}: shard {s!r} is not a file in {folder}")
    return shards


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
        state, args = {}, None
        for shard in _shards(file, folder):
            state.update(_read_file(os.path.join(folder, shard))[0])
    else:
        state, args = _read_file(file)
    config = None
    config_path = os.path.join(folder, HF_CONFIG)
    if os.path.basename(file) in HF_WEIGHTS + HF_INDEXES and os.path.isfile(config_path):
        config = read_json(config_path, "JSON config")
        if not isinstance(config, dict):
            raise WeightsError(f"{config_path}: expected a JSON object, got {type(config).__name__}")
    return state, config, args


def _unshared(state: dict) -> dict:
    # safetensors refuses tensors that share memory (tied heads, q/k/v chunks): own copies
    return {k: v.detach().contiguous().clone() for k, v in state.items()}


def write_state(state: dict, path: str, wrap: bool = True, args: dict | None = None) -> None:
    """A .safetensors file (flat), or a torch pickle ({'model': state} when `wrap`, as
    official checkpoints, plus {'args': args} when given: the model options and class names
    that the tensors cannot tell). Written whole or not at all (ddetr.util.files)."""
    if path.endswith(".safetensors"):
        atomic_write(path, _safetensors(path).save(_unshared(state), metadata={"format": "pt"}))
    else:
        obj = ({"model": state, **({"args": args} if args else {})}) if wrap else state
        atomic_write(path, lambda f: torch.save(obj, f))


def hf_files(folder: str, safetensors: bool = True) -> tuple[str, str]:
    """(weights file, config.json) that `write_hf_folder` writes in `folder`."""
    return os.path.join(folder, HF_WEIGHTS[0] if safetensors else HF_WEIGHTS[1]), os.path.join(folder, HF_CONFIG)


def write_hf_folder(state: dict, config: dict, folder: str, safetensors: bool = True) -> str:
    weights, config_path = hf_files(folder, safetensors)
    write_state(_unshared(state), weights, wrap=False)
    write_json(config_path, config, sort_keys=True)  # last: a folder with a config is complete
    return weights
