"""Every option of the `ddetr` command and its default, in one table, and the one place
where a command's options are resolved.

The command line leaves every option it was not given as None. `resolve` then fills each
one from, in order: the preset (`--preset demo`, always for `ddetr demo`), the command's
own defaults, the table below. The model's options and defaults are the official ones and
live with the model (`ddetr.models.DEFAULTS`); this table takes them from there.
"""

from __future__ import annotations

import argparse

from ..models import DEFAULTS as MODEL

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
    resume=None,
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

CONVERT = dict(hf_backbone="transformers")  # `ddetr convert --backbone`: the HF ResNet names and config

# None here means "decided later": the number of classes by the data set; for eval and
# predict, the image size and number of detections kept by the checkpoint's training options.
DEFAULTS = {**MODEL, "num_classes": None, **DATA, **TRAIN, **PREDICT, **CONVERT}

# Where a command's default differs from the table.
COMMAND_DEFAULTS = {
    "demo": dict(output_dir="ddetr-demo", device="cpu"),  # the demo is meant for the CPU
    "eval": dict(output_dir=".", image_size=None, num_select=None),
    "predict": dict(output_dir="predictions", device="cpu", image_size=None),
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
    from ..weights import load
    from ..weights.variant import ARCHITECTURE

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
