"""Options: one table of defaults; what the user gives wins over the preset, the preset over
the command's defaults, those over the table; nothing reads the raw command line."""

import pytest

from ddetr.cli import build_parser
from ddetr.engine.options import DEFAULTS, DEMO_PRESET, from_checkpoint, resolve
from ddetr.models import DEFAULTS as MODEL


def _resolved(*argv):
    args = build_parser().parse_args(list(argv))
    return resolve(args.command, args)


def test_every_parsed_option_starts_unset():
    # a default in argparse would hide whether the user gave the option
    for argv in (["train"], ["demo"], ["eval", "--checkpoint", "c.pth"], ["predict", "x.png", "--checkpoint", "c"]):
        args = build_parser().parse_args(argv)
        given = {k for k, v in vars(args).items() if v is not None} - {"command", "checkpoint", "images"}
        assert given == set(), (argv, given)


def test_train_official_defaults_and_user_values():
    args = _resolved("train", "--coco-path", "/data/coco", "--lr", "1e-3")
    assert args.lr == 1e-3  # given
    assert args.epochs == DEFAULTS["epochs"] == 50 and args.image_size == 800 and args.output_dir == "output"
    assert args.hidden_dim == MODEL["hidden_dim"] == 256 and args.num_classes is None  # from the data
    assert args.preset == "official"


def test_demo_preset_under_user_values():
    args = _resolved("demo", "--epochs", "3", "--hidden-dim", "32")
    assert args.epochs == 3 and args.hidden_dim == 32
    assert args.enc_layers == DEMO_PRESET["enc_layers"] and args.image_size == DEMO_PRESET["image_size"]
    assert args.output_dir == "ddetr-demo" and args.device == "cpu"
    assert args.lr_linear_proj_mult == DEFAULTS["lr_linear_proj_mult"]  # not in the preset: the table
    assert args.threshold == DEFAULTS["threshold"] and args.num_pictures == DEFAULTS["num_pictures"]
    same = _resolved("train", "--preset", "demo", "--coco-path", "d")
    assert same.enc_layers == DEMO_PRESET["enc_layers"] and same.output_dir == "output"


@pytest.mark.parametrize(
    "argv,size",
    [
        (["train"], DEMO_PRESET["image_size"]),  # no data: the synthetic set at the demo's size
        (["train", "--image-size", "800"], 800),  # ... unless given, even when equal to the table's value
        (["train", "--coco-path", "d"], 800),
    ],
)
def test_train_without_data_uses_the_demo_image_size(argv, size):
    assert _resolved(*argv).image_size == size


def test_eval_and_predict_defer_to_the_checkpoint():
    args = _resolved("eval", "--checkpoint", "c.pth", "--coco-path", "d")
    assert args.image_size is None and args.num_select is None and args.output_dir == "."
    assert args.batch_size == DEFAULTS["batch_size"] and args.amp is False
    saved = {"image_size": 128, "num_select": 30}
    assert from_checkpoint(args.image_size, saved, "image_size") == 128
    assert from_checkpoint(640, saved, "image_size") == 640
    assert from_checkpoint(None, {}, "image_size") == 800  # an official checkpoint without it
    pred = _resolved("predict", "a.png", "--checkpoint", "c.pth")
    assert pred.output_dir == "predictions" and pred.device == "cpu" and pred.threshold == 0.3
