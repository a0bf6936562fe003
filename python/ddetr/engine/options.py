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
from ..models.config import ARCHITECTURE, DTYPES, check_options, int_range, number, one_of
from ..models.config import CHECKS as MODEL_CHECKS
from ..models.config import DEFAULTS as MODEL
from ..weights import load

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

# eval and predict (engine/runner.py): the dtype the model runs in (their `compile` default
# is in COMMAND_DEFAULTS)
INFERENCE = dict(dtype="float32")

CONVERT = dict(hf_backbone="transformers")  # `ddetr convert --backbone`: the HF ResNet names and config

# None here means "decided later": the number of classes by the data set; for eval and
# predict, the image size and number of detections kept by the checkpoint's training options.
DEFAULTS = {**MODEL, "num_classes": None, **DATA, **TRAIN, **PREDICT, **INFERENCE, **CONVERT}

# Where a command's default differs from the table.
COMMAND_DEFAULTS = {
    "demo": dict(output_dir="ddetr-demo", device="cpu"),  # the demo is meant for the CPU
    # compile "auto": when the images to run are expected to repay it (engine/runner.py)
    "eval": dict(output_dir=".", image_size=None, num_select=None, compile="auto"),
    "predict": dict(output_dir="predictions", device="cpu", image_size=None, compile="auto"),
}

# Chosen to learn something real within minutes on two CPU cores: a random-init ResNet-18
# (nothing can be downloaded) whose stem and layer1 stay frozen as in the official recipe
# (random but informative features, and no backward pass through the two costliest layers),
# 3 feature levels, hidden size 64, 2 + 2 layers, 30 queries, box refinement, 128 px images
# of the synthetic shapes (`SyntheticConfig`: 600 training and 100 validation images).
DEMO_PRESET = dict(
    backbone="resnet18",
    train_full_backbone=False,
    num_feature_levels=3,
    hidden_dim=64,
    nheads=8,
    enc_layers=2,
    dec_layers=2,
    dim_feedforward=256,
    num_queries=30,
    dropout=0.0,
    with_box_refine=True,
    dec_n_points=4,
    enc_n_points=4,
    lr=4e-4,
    lr_backbone=2e-4,
    weight_decay=1e-4,
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


def resolve(command: str, args: argparse.Namespace) -> argparse.Namespace:
    """Fill every option `args` left as None, once (see the module docstring). `ddetr train`
    without data trains on the synthetic set, at the demo's image size unless given; with
    --pretrained, the weights' architecture comes before the preset."""
    preset = "demo" if command == "demo" else getattr(args, "preset", None) or DEFAULTS["preset"]
    layers = [PRESETS[preset], COMMAND_DEFAULTS.get(command, {})]
    if getattr(args, "pretrained", None):
        layers.insert(0, pretrained_options(args.pretrained))
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
    if getattr(args, "output_dir", None) is not None:
        ensure_dir(args.output_dir, "--output-dir")


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
