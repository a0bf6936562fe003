"""Every option of the `ddetr` command and its default, in one table, and the one place
where a command's options are resolved.

The command line leaves every option it was not given as None. `resolve` then fills each
one from, in order: the preset (`--preset demo`, always for `ddetr demo`), the command's
own defaults, the table below. The model's options and defaults are the official ones and
live with the model (`ddetr.models.DEFAULTS`); this table takes them from there.
"""

from __future__ import annotations

import argparse
import os

from ..errors import UserError
from ..models.config import ARCHITECTURE, DTYPES, check_options, flag, int_range, number, one_of
from ..models.config import CHECKS as MODEL_CHECKS
from ..models.config import DEFAULTS as MODEL
from ..weights import load
from ..weights.files import read_checkpoint

DATA = dict(
    coco_path=None,  # COCO layout; or the four explicit paths below
    train_images=None,
    train_ann=None,
    val_images=None,
    val_ann=None,
    image_size=800,  # validation short side; training sizes are the official ones scaled by image_size / 800
)

TRAIN = dict(
    preset="official",  # a key of PRESETS
    output_dir="output",
    epochs=50,
    lr_drop=40,
    batch_size=2,  # per process
    lr=2e-4,
    lr_linear_proj_mult=0.1,
    weight_decay=1e-4,
    clip_max_norm=0.1,
    seed=42,
    num_workers=2,
    device="auto",
    amp=False,
    compile=False,  # train: torch.compile the model and the loss math; eval / predict: see COMMAND_DEFAULTS
    resume=None,
    overwrite=False,  # start afresh in an output folder that holds a checkpoint
    pretrained=None,  # weights to fine-tune from (either layout); their model options fill those not given
    eval_every=1,
    print_freq=50,
    max_steps=None,
    quiet=False,
    verbose=False,
    find_unused_parameters=False,
    train_full_backbone=False,
)

PREDICT = dict(threshold=0.3, show_sampling_points=False, top_queries=3, num_pictures=6)

# eval and predict (engine/inference_model.py): the dtype the model runs in (their `compile` default
# is in COMMAND_DEFAULTS)
INFERENCE = dict(dtype="float32")

CONVERT = dict(hf_backbone="transformers")  # `ddetr convert --backbone`: the HF ResNet names and config

# None here means "decided later": the number of classes by the data set; for eval and
# predict, the image size and number of detections kept by the checkpoint's training options.
DEFAULTS = {**MODEL, "num_classes": None, **DATA, **TRAIN, **PREDICT, **INFERENCE, **CONVERT}

# Where a command's default differs from the table.
COMMAND_DEFAULTS = {
    "demo": dict(output_dir="ddetr-demo", device="cpu"),  # the demo is meant for the CPU
    # compile "auto": on the CPU, when the images to run are expected to repay it (engine/inference_model.py)
    "eval": dict(output_dir=".", image_size=None, num_select=None, compile="auto"),
    "predict": dict(output_dir="predictions", device="cpu", image_size=None, compile="auto"),
}

# Chosen to learn something real within minutes on two CPU cores: a random-init ResNet-18
# (nothing can be downloaded) whose stem and layer1 stay frozen as in the official recipe
# (random but informative features, and no backward pass through the two costliest layers),
# 3 feature levels, hidden size 64, 2 + 2 layers, 30 queries, box refinement, 128 px images
# of the synthetic shapes (`SyntheticConfig`: 600 training and 100 validation images). What
# it does not name is the table's.
DEMO_PRESET = dict(
    backbone="resnet18",
    num_feature_levels=3,
    hidden_dim=64,
    enc_layers=2,
    dec_layers=2,
    dim_feedforward=256,
    num_queries=30,
    dropout=0.0,
    with_box_refine=True,
    lr=4e-4,
    lr_backbone=2e-4,
    batch_size=8,
    epochs=24,
    lr_drop=20,
    image_size=128,
    eval_every=4,
    num_workers=0,
    num_select=30,
)
PRESETS = {"official": {}, "demo": DEMO_PRESET}

# Options a command's engine reads that its command line does not offer.
ENGINE_READS = {"train": {**DATA, **TRAIN}, "demo": {**DATA, **TRAIN, **PREDICT}}


def has_data(args) -> bool:
    return any(getattr(args, k, None) for k in ("coco_path", "train_images", "train_ann", "val_images", "val_ann"))


def pretrained_options(path: str) -> dict:
    """The architecture options of the weights at `path` (either layout), all but the class
    count: a model fine-tuned from them is built as they were unless told otherwise."""
    _, info = load(path)
    return {k: v for k, v in info.options.items() if k in ARCHITECTURE and k != "num_classes"}


# What a resumed run does not take from its checkpoint when not given: where and how this
# run works, not what it trains. Every other option not given is the checkpoint's.
NOT_RESUMED = {
    "preset", "coco_path", "train_images", "train_ann", "val_images", "val_ann", "output_dir", "device",
    "num_workers", "compile", "resume", "overwrite", "pretrained", "print_freq", "max_steps", "quiet", "verbose",
    "find_unused_parameters", "backbone_weights",
}  # fmt: skip


def _given(args, name: str) -> bool:
    return getattr(args, name, None) not in (None, False)


def refuse_contradictions(command: str, args: argparse.Namespace) -> None:
    """UserError for options given together that contradict each other (before `resolve`
    fills the others: only what the user gave counts), rather than one silently winning."""
    pairs = [
        ("amp", "dtype", lambda: args.dtype != "bfloat16", "--amp computes in bfloat16"),
        ("resume", "pretrained", lambda: args.resume != "auto", "a resumed run continues its own weights"),
        ("resume", "overwrite", lambda: True, "--overwrite starts afresh"),
        ("show_sampling_points", "compile", lambda: True, "the points are recorded by a hook on the uncompiled model"),
    ]
    if command == "convert" and args.to == "official" and _given(args, "hf_backbone"):
        raise UserError(f"--backbone {args.hf_backbone}: only --to hf writes backbone names; --to official takes none")
    if command == "predict" and _given(args, "top_queries") and not _given(args, "show_sampling_points"):
        raise UserError("--top-queries: only used with --show-sampling-points, which was not given")
    if command == "export" and _given(args, "num_select") and not _given(args, "postprocess"):
        raise UserError("--num-select: only used with --postprocess, which was not given")

    def show(name):
        v = getattr(args, name)
        return flag(name) if v is True else f"{flag(name)} {v}"

    for a, b, clash, why in pairs:
        if _given(args, a) and _given(args, b) and clash():
            raise UserError(f"{show(a)} and {show(b)} contradict each other ({why}); give one of them")


def resume_options(args: argparse.Namespace, output_dir: str) -> dict:
    """The options of the checkpoint --resume names (none when 'auto' finds none), after
    refusing, before anything else loads, those given that contradict it: a model option
    (the weights would not fit) or one that changes the optimiser's parameter groups."""
    from .checkpoint import check_fits, resume_path  # checkpoint imports this module

    path = resume_path(args.resume, output_dir)
    if path is None:
        return {}
    saved = read_checkpoint(path)["args"]
    check_fits(saved, args, path)
    groups = dict(
        train_full_backbone=lambda v: "the stem and layer1 train" if v else "the stem and layer1 are frozen",
        lr_backbone=lambda v: "the backbone trains" if v > 0 else "the backbone is frozen",
    )
    for name, effect in groups.items():
        given, old = getattr(args, name, None), saved.get(name)
        if given is not None and old is not None and effect(given) != effect(old):
            raise UserError(
                f"{flag(name)} {given} ({effect(given)}): {path} was trained with {flag(name)} {old} ({effect(old)}); "
                "that changes what the optimiser trains, which a resumed run cannot (a new run can: --pretrained)"
            )
    return {k: v for k, v in saved.items() if k in DEFAULTS and k not in NOT_RESUMED and v is not None}


def resolve(command: str, args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option `args` left as None, once (see the module docstring). `ddetr train`
    without data trains on the synthetic set, at the demo's image size unless given; with
    --pretrained, the weights' architecture comes before the preset; with --resume, the
    checkpoint's options come before everything. Options given together that contradict
    each other are refused first."""
    refuse_contradictions(command, args)
    preset = "demo" if command == "demo" else getattr(args, "preset", None) or DEFAULTS["preset"]
    layers = [PRESETS[preset], COMMAND_DEFAULTS.get(command, {})]
    if getattr(args, "pretrained", None):
        layers.insert(0, pretrained_options(args.pretrained))
    if command == "train" and getattr(args, "resume", None):
        output_dir = args.output_dir or next((la["output_dir"] for la in layers if "output_dir" in la), None)
        output_dir = output_dir or DEFAULTS["output_dir"]
        layers.insert(0, resume_options(args, output_dir))
    if command == "train" and not has_data(args):
        layers.insert(1, {"image_size": DEMO_PRESET["image_size"]})
    names = set(vars(args)) | set(ENGINE_READS.get(command, ()))
    for name in sorted(names):
        if getattr(args, name, None) is not None or name not in DEFAULTS:
            continue
        source = next((layer for layer in layers if name in layer), DEFAULTS)
        setattr(args, name, source[name])
    if command == "demo":
        args.preset = preset
    return args


def from_checkpoint(value, saved: dict, name: str):
    """An option of eval / predict: as given, else as the checkpoint was trained, else the
    table's default."""
    if value is not None:
        return value
    return saved.get(name) if saved.get(name) is not None else DEFAULTS[name]


# What each option accepts: (test, what was expected). Checked once, before anything runs.
CHECKS = dict(
    MODEL_CHECKS,
    image_size=int_range(32, 4096),
    epochs=int_range(1),
    lr_drop=int_range(1),
    batch_size=int_range(1, 4096),
    lr=number(0, above=True),
    lr_linear_proj_mult=number(0),
    weight_decay=number(0),
    clip_max_norm=number(0),
    seed=int_range(-(2**63)),
    num_workers=int_range(0, 256),
    eval_every=int_range(0),
    print_freq=int_range(1),
    max_steps=int_range(1),
    threshold=number(0, 1),
    dtype=one_of(*DTYPES),
    top_queries=int_range(0, 1000),
    num_pictures=int_range(0),
    num_train=int_range(1),
    num_val=int_range(1),
)


def validate(command: str, args: argparse.Namespace) -> None:
    """Every option of a resolved command line in range, and the files and folders it names
    usable: before any data is read or a model built."""
    from .distributed import resolve_device  # torch.cuda, only once the options are known

    check_options(vars(args), checks=CHECKS)
    resolve_device(getattr(args, "device", None))
    weights = getattr(args, "backbone_weights", None)
    if weights and not os.path.isfile(weights):
        raise UserError(f"--backbone-weights {weights}: file not found (expected a torchvision ResNet state_dict)")
    if command in ("train", "demo"):
        check_learned_embedding_size(vars(args))
    if getattr(args, "output_dir", None) is not None:
        ensure_dir(args.output_dir, "--output-dir")


def check_learned_embedding_size(values: dict) -> None:
    """The learned position embedding covers LEARNED_CELLS cells on the finest feature map:
    refuse an --image-size whose training images (long side up to official_sizes' max_size)
    go beyond, before the first step fails on it."""
    from ..data.transforms import official_sizes
    from ..models.position_encoding import LEARNED_CELLS

    size = values.get("image_size")
    if values.get("position_embedding") not in ("learned", "v3") or not size:
        return
    # the finest map: C3 (stride 8) with several levels, else C5 (16 with dilation, 32)
    stride = 8 if values.get("num_feature_levels", 4) > 1 else 16 if values.get("dilation") else 32
    limit = LEARNED_CELLS * stride
    if official_sizes(size)["max_size"] > limit:
        best = max(s for s in range(1, size) if official_sizes(s)["max_size"] <= limit)
        raise UserError(
            f"--image-size {size}: images reach {official_sizes(size)['max_size']} px on the long side, beyond "
            f"the {limit} px ({LEARNED_CELLS} cells of stride {stride}) the learned position embedding covers; "
            f"give --image-size {best} or less, or --position-embedding sine"
        )


def ensure_dir(path: str, what: str) -> None:
    """Create the folder `path` (an option's value) or say why it cannot be."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UserError(f"{what} {path}: is a file, expected a folder")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise UserError(f"{what} {path}: cannot create the folder: {e.strerror}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: the folder is not writable")
