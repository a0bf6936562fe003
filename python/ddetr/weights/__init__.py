"""Deformable DETR weights in either layout: the official release's (`backbone.0.body.*`,
`transformer.*`) and transformers' (HF hub files and save_pretrained folders, as
transformers 4.x names them, and 5.x's in-memory names).

    state, info = ddetr.weights.load("deformable_detr_r50.pth")     # or an HF folder / .bin / .safetensors
    model = ddetr.models.build_model(**info.options); load_strict(model, state, info.path)
    model, criterion, post = ddetr.weights.build("r50.pth", num_select=50)   # the same in one call
    ddetr.weights.convert("r50.pth", "r50-hf/", to="hf")            # and back: to="official"
    summary = ddetr.weights.load_matching(model_with_3_classes, "r50.pth")   # fine-tuning

`load` always returns the official layout, which ddetr's model loads with strict=True."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..models.config import DEFAULTS
from ..util.files import check_writable
from . import files
from .errors import CheckpointError, WeightsError, first
from .fitting import load_matching, load_strict
from .hf_config import CATEGORIES_KEY, from_config, to_config
from .layout import backbone_route, complete_heads, detect_layout, hf_to_official, official_to_hf, strip_wrappers
from .variant import describe, variant_name

LAYOUTS = ("official", "hf")  # the layouts convert writes (detect_layout tells which a file is)


@dataclass
class WeightsInfo:
    path: str
    layout: str  # 'official' or 'hf' (the source's)
    variant: str  # 'default', 'single-scale', 'box-refine', 'two-stage'
    num_classes: int
    options: dict  # ddetr model options the weights imply (ddetr.models.DEFAULTS names)
    backbone_route: str | None = None  # HF sources: 'transformers' or 'timm' names
    id2label: dict = field(default_factory=dict)  # class names: HF config.json's, or a ddetr checkpoint's data set's
    args: dict = field(default_factory=dict)  # a checkpoint's training options (official or ddetr), if any
    label_to_category: dict = field(default_factory=dict)  # a ddetr run's data set's category ids, if known


def _stated_by_args(args: dict) -> dict:
    """The model options a checkpoint's `args` state (official and ddetr checkpoints keep
    them; nheads, dilation and two-stage's query count are in no tensor)."""
    return {k: args[k] for k in DEFAULTS if k != "backbone_weights" and args.get(k) is not None}


def _labels(config: dict | None, args: dict) -> tuple[dict, dict]:
    """(label -> class name, label -> category id): from an HF config (id2label), else
    from the data set a ddetr checkpoint was trained on."""
    dataset = args.get("dataset") if isinstance(args.get("dataset"), dict) else {}
    names = config.get("id2label") if config else dataset.get("label_names")
    cats = config.get(CATEGORIES_KEY) if config else dataset.get("label_to_category")
    return tuple({int(k): v for k, v in d.items()} if isinstance(d, dict) else {} for d in (names, cats))


def load(path, nheads: int | None = None) -> tuple[dict, WeightsInfo]:
    """(state dict in ddetr's official layout, WeightsInfo) from a file or an HF folder.
    `nheads`: the head count where the file does not state it (the tensors hold heads x
    points, so it decides the points per head)."""
    where = os.fspath(path)
    state, config, args = files.read(where)
    args = args or {}
    state = strip_wrappers(state)
    layout = detect_layout(state)
    if layout is None:
        raise WeightsError(
            f"{where}: neither the official nor the HF layout of Deformable DETR "
            f"(no transformer.level_embed / model.level_embed); keys: {first(state)}"
        )
    official = hf_to_official(state, where) if layout == "hf" else complete_heads(state, where)
    stated, source = (from_config(config, where), "config.json") if config else (_stated_by_args(args), "args")
    options = describe(official, where, nheads=stated.get("nheads") or nheads)
    for name, value in stated.items():
        if name in options and options[name] != value:
            raise WeightsError(
                f"{where}: {source} gives {name}={value!r} but the weights have {name}={options[name]!r}"
            )
        options[name] = value
    names, cats = _labels(config, args)
    return official, WeightsInfo(
        where,
        layout,
        variant_name(options),
        options["num_classes"],
        options,
        backbone_route(state) if layout == "hf" else None,
        id2label=names,
        args=args,
        label_to_category=cats,
    )


FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")  # what --to official writes


def _has_safetensors() -> bool:
    try:
        import safetensors  # noqa: F401
    except ImportError:
        return False
    return True


def check_destination(src, dst, to: str, overwrite: bool = True) -> list:
    """The files `convert(src, dst, to)` will write, refused before any work when they cannot
    be: the wrong kind (a file where the HF folder goes, a folder or other suffix where the
    official file goes), the source itself, or there already and `overwrite` not given."""
    src, dst = os.fspath(src), os.fspath(dst)
    if not os.path.exists(src):
        raise WeightsError(f"{src}: no such file or folder")
    sources = [src]
    if os.path.isdir(src):
        sources += [os.path.join(src, n) for n in (*files.HF_WEIGHTS, *files.HF_INDEXES, files.HF_CONFIG)]
    if to == "hf":
        if dst.endswith(FILE_SUFFIXES):
            raise WeightsError(f"{dst}: --to hf writes a folder (config.json + weights), not a file")
        check_writable(dst, what="folder", source=src)
        out = list(files.hf_files(dst, _has_safetensors()))
    elif to == "official":
        if not dst.endswith(FILE_SUFFIXES) or os.path.isdir(dst):
            raise WeightsError(f"{dst}: --to official writes a file ending in {' or '.join(FILE_SUFFIXES)}")
        out = [dst]
    else:
        raise ValueError(f"to must be one of {LAYOUTS}, got {to!r}")
    for path in out:
        for s in sources:
            check_writable(path, overwrite=True, source=s)
        check_writable(path, overwrite=overwrite)
    return out


def convert(
    src,
    dst,
    to: str = "hf",
    backbone: str = "transformers",
    id2label: dict | None = None,
    options: dict | None = None,
    overwrite: bool = True,
) -> WeightsInfo:
    """Convert `src` (either layout, any format) to `dst`. to='hf': `dst` is a folder that
    gets config.json + model.safetensors (pytorch_model.bin without safetensors installed);
    `backbone` picks the ResNet names and config: 'transformers' (loads with no timm) or
    'timm' (as hub files). to='official': `dst` is a .pth ({'model': state}) or .safetensors.
    `options`: what the tensors cannot tell, for config.json (e.g. two-stage `num_queries`);
    a .pth keeps them (and the class names) in its `args`. `dst` checked first
    (`check_destination`); each file is written whole or not at all."""
    check_destination(src, dst, to, overwrite)
    state, info = load(src, nheads=(options or {}).get("nheads"))
    info.options.update(options or {})
    dst = os.fspath(dst)
    if to == "hf":
        names = id2label or info.id2label or None
        config = to_config(info.options, backbone, names)
        if info.label_to_category:
            config[CATEGORIES_KEY] = {str(k): v for k, v in info.label_to_category.items()}
        files.write_hf_folder(official_to_hf(state, backbone, info.path), config, dst, _has_safetensors())
    elif to == "official":
        # args keep what the tensors cannot tell (heads, two-stage queries, class names); the
        # official code reads only 'model'. A .safetensors file holds tensors only.
        dataset = dict(label_names=id2label or info.id2label, label_to_category=info.label_to_category)
        args = {**info.options, "dataset": {k: dict(v) for k, v in dataset.items() if v}}
        files.write_state(state, dst, args=args)
    else:
        raise ValueError(f"to must be one of {LAYOUTS}, got {to!r}")
    return info


from .model import build, model_from_checkpoint  # noqa: E402  (they use load, above)

__all__ = [
    "LAYOUTS",
    "load",
    "build",
    "model_from_checkpoint",
    "convert",
    "check_destination",
    "load_strict",
    "load_matching",
    "WeightsInfo",
    "WeightsError",
    "CheckpointError",
    "official_to_hf",
    "hf_to_official",
    "to_config",
]
