"""Every `ddetr` command on tiny data: demo, train, eval, predict, each command's help,
python -m ddetr (bench: test_cli_bench.py), and clear errors for bad input."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import SYNTHETIC, TINY_CLI, ddetr, ddetr_here, images
from ddetr.visualize import MIN_PICTURE_SIZE, colour


def test_train_outputs(trained):
    assert {"checkpoint.pth", "log.txt", "metrics.json"} <= set(os.listdir(trained.dir))
    log = [json.loads(line) for line in (trained.dir / "log.txt").read_text().splitlines()]
    assert log[-1]["epoch"] == 0 and "train_loss" in log[-1] and "test_AP" in log[-1]
    metrics = json.loads((trained.dir / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)


def test_eval(trained, tmp_path):
    rc, _, err = ddetr_here(
        "eval", "--checkpoint", trained.checkpoint, "--coco-path", trained.data, "--output-dir", tmp_path,
        "--num-workers", "0", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert rc == 0, err
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == SYNTHETIC["num_val"] and 0 <= metrics["AP"] <= 1


def test_predict_with_sampling_points(trained, tmp_path):
    pictures = images(trained.data)[:3]
    gray = tmp_path / "gray.jpg"
    Image.new("L", (50, 40), 128).save(gray)
    common = [*pictures, gray, "--checkpoint", trained.checkpoint, "--threshold", "0"]
    assert ddetr_here("predict", *common, "--output-dir", tmp_path / "plain").rc == 0
    assert ddetr_here("predict", *common, "--output-dir", tmp_path / "pred", "--show-sampling-points").rc == 0
    res = json.loads((tmp_path / "pred" / "detections.json").read_text())
    plain = json.loads((tmp_path / "plain" / "detections.json").read_text())
    assert len(res) == 4 and [r["detections"] for r in res] == [r["detections"] for r in plain]
    # labels = category ids 1..num_classes
    label_colours = {colour(label) for label in range(SYNTHETIC["num_classes"] + 1)}
    for r, p in zip(res, plain):
        image = Image.open(r["image"])
        picture = np.asarray(Image.open(r["output"]).convert("RGB"))
        # small images are drawn enlarged: the long side becomes MIN_PICTURE_SIZE
        scale = MIN_PICTURE_SIZE / max(image.size)
        assert picture.shape[1] == round(image.width * scale) and picture.shape[0] > round(image.height * scale)
        d = r["detections"][0]
        assert {"label", "category_id", "name", "score", "box"} <= set(d)
        assert d["name"] in ("circle", "square", "triangle")
        # the sampling points are the only difference: dots in the colours of the classes
        changed = np.any(picture != np.asarray(Image.open(p["output"]).convert("RGB")), axis=-1)
        assert changed.sum() > 20, "no sampling point was drawn"
        assert {tuple(c) for c in picture[changed]} <= label_colours


def test_demo_tiny(tmp_path):
    rc, out, err = ddetr_here(
        "demo", "--output-dir", tmp_path, "--epochs", "2", "--num-train", "4", "--num-val", "2",
        "--max-steps", "1", "--num-pictures", "2", *(a for a in TINY_CLI if a != "--quiet"),
    )  # fmt: skip
    assert rc == 0, err
    # what to expect: the time left after the first epoch, the progress, where the files are
    assert "the first epoch took" in out and "the 1 left should take about" in out
    assert "epoch 2/2" in out + err and str(tmp_path / "predictions") in out
    assert {
        "checkpoint.pth",
        "metrics.json",
        "log.txt",
        "training_curve.png",
        "data",
        "predictions",
        "demo_summary.json",
    } <= set(os.listdir(tmp_path))
    assert len([f for f in os.listdir(tmp_path / "predictions") if f.endswith(".png")]) == 2
    assert len(os.listdir(tmp_path / "data" / "train2017")) == 4
    assert "AP50" in out


# Each command's help: its own usage line and options only it has; none of another's.
OWN_OPTIONS = {
    "demo": ["--num-pictures"],
    "train": ["--epochs", "--resume", "--pretrained", "--train-ann"],
    "eval": ["--checkpoint", "--num-select", "--val-ann"],
    "predict": ["IMAGE", "--threshold", "--show-sampling-points"],
    "check-data": ["--coco-path", "--train-images", "--val-ann"],
    "convert": ["SRC", "DST", "--to"],
    "export": ["--checkpoint", "--output", "--opset", "--attention"],
}
NOT_IN = {  # options of other commands each help must not show
    "demo": ["--checkpoint", "--coco-path", "--opset"],
    "train": ["--checkpoint", "--threshold", "--opset"],
    "eval": ["--epochs", "--threshold", "--opset"],
    "predict": ["--coco-path", "--epochs", "--opset"],
    "check-data": ["--checkpoint", "--epochs", "--threshold"],
    "convert": ["--checkpoint", "--epochs", "--coco-path"],
    "export": ["--coco-path", "--epochs", "--threshold"],
}


def test_python_m_ddetr_help_lists_every_command():
    rc, out, err = ddetr("--help")
    assert rc == 0, err
    listed = re.search(r"\{([a-z,-]+)\}", out)
    assert listed and set(listed.group(1).split(",")) == {*OWN_OPTIONS, "bench"}, out


@pytest.mark.parametrize("command", list(OWN_OPTIONS))
def test_each_command_has_its_own_help(command):
    rc, out, err = ddetr_here(command, "--help")
    assert rc == 0, err
    assert out.startswith(f"usage: ddetr {command} "), out[:200]
    for option in OWN_OPTIONS[command]:
        assert option in out, (command, option)
    for option in NOT_IN[command]:
        assert option not in out, (command, option)


def test_bad_annotations_clear_error(trained, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": "x.png"}],
                "annotations": [{"id": 5, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10]}],
                "categories": [{"id": 1}],
            }
        )
    )
    run = ddetr_here(
        "eval", "--checkpoint", trained.checkpoint, "--val-images", trained.data, "--val-ann", bad,
        "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert run.rc == 1
    assert "bad.json" in run.err and "annotations[0] (id 5)" in run.err and "bbox" in run.err


def test_missing_checkpoint_clear_error(tmp_path):
    run = ddetr_here("predict", "img.png", "--checkpoint", tmp_path / "none.pth")
    assert run.rc == 1 and "none.pth: checkpoint not found" in run.err


def test_eval_without_data_names_the_options(trained):
    run = ddetr_here("eval", "--checkpoint", trained.checkpoint, "--quiet")
    assert run.rc == 1
    assert run.err == (
        "ddetr eval: error: no data: give --coco-path DIR (COCO layout) or --val-images DIR --val-ann FILE\n"
    )
