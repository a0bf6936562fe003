"""The option groups that several commands share, and their help texts' defaults.

Every option defaults to None here; `ddetr.engine.options.resolve` fills what was not given,
once, from the preset, the command's defaults and the one table of defaults.
"""

from __future__ import annotations

import argparse

from ...models.config import DEFAULTS as MODEL_DEFAULTS
from ...models.config import DTYPES, flag
from ..options import COMMAND_DEFAULTS, DEFAULTS, PRESETS


def default_help(name: str, command: str | None = None) -> str:
    """The help text's default, as `resolve` will fill it (`ddetr demo` always uses its preset)."""
    table = {**DEFAULTS, **COMMAND_DEFAULTS.get(command, {}), **(PRESETS["demo"] if command == "demo" else {})}
    return f"default {table[name]}"


def add_model_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("model (official names; default: the official values)")
    for name, default in MODEL_DEFAULTS.items():
        option = flag(name)
        if isinstance(default, bool):
            g.add_argument(
                flag(name), action=argparse.BooleanOptionalAction, default=None, help=default_help(name, command)
            )
        elif name == "num_classes":
            g.add_argument(option, type=int, default=None, help="default: from the data set")
        elif name == "backbone_weights":
            g.add_argument(option, default=None, help="torchvision ResNet state_dict (.pth) to start from")
        else:
            g.add_argument(option, type=type(default), default=None, help=default_help(name, command))


def add_data_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("data" + (" (default: the built-in synthetic data set)" if command == "train" else ""))
    g.add_argument("--coco-path", help="COCO layout: train2017/, val2017/, annotations/instances_*.json")
    g.add_argument("--train-images", help="image folder of the training set")
    g.add_argument("--train-ann", help="instances JSON of the training set")
    g.add_argument("--val-images", help="image folder of the validation set")
    g.add_argument("--val-ann", help="instances JSON of the validation set")
    size = "default: as the checkpoint was trained" if command == "eval" else default_help("image_size")
    g.add_argument(
        "--image-size",
        type=int,
        default=None,
        help=f"short side for validation (800 for COCO); training scales and crops are the official "
        f"ones scaled by image-size/800; {size}",
    )


def add_train_options(p: argparse.ArgumentParser, command: str) -> None:
    g = p.add_argument_group("training")

    def a(option, help="", **kw):
        name = option[2:].replace("-", "_")
        g.add_argument(option, default=None, help=f"{help}{'; ' if help else ''}{default_help(name, command)}", **kw)

    g.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="defaults for options not given: the official recipe or the demo's small CPU model",
    )
    a("--output-dir", "checkpoint.pth, log.txt, metrics.json, training_curve.png go here")
    a("--epochs", type=int)
    a("--lr-drop", "epochs between lr x0.1 steps", type=int)
    a("--batch-size", "per process", type=int)
    a("--lr", type=float)
    a("--lr-linear-proj-mult", type=float)
    a("--weight-decay", type=float)
    a("--clip-max-norm", type=float)
    a("--seed", type=int)
    a("--num-workers", type=int)
    a("--device", "auto, cpu, cuda")
    a(
        "--amp",
        "bfloat16 autocast on the CPU and CUDA (weights, gradients and losses stay float32); "
        "faster where the hardware computes in bfloat16 natively (AVX512-BF16, AMX, tensor cores)",
        action=argparse.BooleanOptionalAction,
    )
    if command == "train":
        a(
            "--compile",
            "torch.compile (inductor) the model and the loss math, with dynamic shapes; the first "
            "step compiles (minutes on a CPU), and so, with torch 2.13, does each new padded batch "
            "size, up to torch._dynamo's recompile limit (8), after which new sizes run eagerly",
            action=argparse.BooleanOptionalAction,
        )
    a("--resume", "a checkpoint to continue from, or 'auto' (output-dir/checkpoint.pth if any)")
    a("--overwrite", "start afresh even where --output-dir holds a checkpoint (replaced)", action="store_true")
    if command == "train":
        a(
            "--pretrained",
            "weights to fine-tune from, either layout (official or ddetr .pth, HF folder, .bin, .safetensors): "
            "model options not given are the weights', class heads are re-initialised when the class count "
            "differs; a checkpoint found by --resume wins",
        )
    a("--eval-every", "evaluate every N epochs (and after the last); 0: never", type=int)
    a("--print-freq", type=int)
    g.add_argument("--max-steps", type=int, default=None, help=argparse.SUPPRESS)
    a("--quiet", action="store_true")
    a("--verbose", "print COCOeval's full summary", action="store_true")
    a("--find-unused-parameters", action=argparse.BooleanOptionalAction)
    a(
        "--train-full-backbone",
        "also train the stem and layer1 (for random-init backbones)",
        action=argparse.BooleanOptionalAction,
    )


def add_inference_options(p: argparse.ArgumentParser, command: str) -> None:
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        default=None,
        help="what the model computes in (sampling locations, boxes and scores stay float32); "
        + default_help("dtype", command),
    )
    p.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the model (minutes on a CPU, then faster); default: auto, when the images "
        "to run are expected to save more time than compiling costs",
    )
