"""Every `ddetr` command on tiny data: demo, train, eval, predict, bench, python -m ddetr,
and clear errors for bad input."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from ddetr import cli
from ddetr.data.synthetic import make_synthetic
from ddetr.visualize import MIN_PICTURE_SIZE, colour
from tiny import TINY_CLI


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic(
        str(root / "syn"), num_train=6, num_val=3, min_image_size=48, max_image_size=64, num_classes=3
    )
    out = root / "run"
    rc = cli.main(
        [
            "train",
            "--coco-path",
            data,
            "--output-dir",
            str(out),
            "--epochs",
            "1",
            "--batch-size",
            "2",
            "--image-size",
            "64",
            "--max-steps",
            "2",
            *TINY_CLI,
        ]
    )
    assert rc == 0
    return data, out


def test_train_outputs(trained):
    _, out = trained
    assert {"checkpoint.pth", "log.txt", "metrics.json"} <= set(os.listdir(out))
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert log[-1]["epoch"] == 0 and "train_loss" in log[-1] and "test_AP" in log[-1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(metrics)


def test_eval(trained, tmp_path):
    data, out = trained
    rc = cli.main(
        [
            "eval",
            "--checkpoint",
            str(out / "checkpoint.pth"),
            "--coco-path",
            data,
            "--output-dir",
            str(tmp_path),
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 3 and 0 <= metrics["AP"] <= 1


def test_predict_with_sampling_points(trained, tmp_path):
    data, out = trained
    images = [os.path.join(data, "val2017", f) for f in sorted(os.listdir(os.path.join(data, "val2017")))]
    gray = tmp_path / "gray.jpg"
    Image.new("L", (50, 40), 128).save(gray)
    common = [*images, str(gray), "--checkpoint", str(out / "checkpoint.pth"), "--threshold", "0"]
    assert cli.main(["predict", *common, "--output-dir", str(tmp_path / "plain")]) == 0
    rc = cli.main(["predict", *common, "--output-dir", str(tmp_path / "pred"), "--show-sampling-points"])
    assert rc == 0
    res = json.loads((tmp_path / "pred" / "detections.json").read_text())
    plain = json.loads((tmp_path / "plain" / "detections.json").read_text())
    assert len(res) == 4 and [r["detections"] for r in res] == [r["detections"] for r in plain]
    label_colours = {colour(label) for label in range(4)}  # 3 classes, labels = category ids 1..3
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


def test_demo_tiny(tmp_path, capsys):
    rc = cli.main(
        [
            "demo",
            "--output-dir",
            str(tmp_path),
            "--epochs",
            "1",
            "--num-train",
            "4",
            "--num-val",
            "2",
            "--max-steps",
            "1",
            "--num-pictures",
            "2",
            *TINY_CLI,
        ]
    )
    assert rc == 0
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
    assert "AP50" in capsys.readouterr().out


def test_bench_passes_arguments_through(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.bench.subprocess, "call", lambda cmd, cwd=None: calls.append((cmd, cwd)) or 0)
    assert cli.main(["bench", "-k", "forward", "--benchmark-json", "x.json"]) == 0
    cmd, cwd = calls[0]
    assert cmd[1:] == ["-m", "pytest", "benchmarks", "-k", "forward", "--benchmark-json", "x.json"]
    assert os.path.isdir(os.path.join(cwd, "benchmarks"))


def test_python_m_ddetr_help():
    proc = subprocess.run([sys.executable, "-m", "ddetr", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for command in ("demo", "train", "eval", "predict", "bench"):
        assert command in proc.stdout


def test_bad_annotations_clear_error(trained, tmp_path, capsys):
    data, out = trained
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
    rc = cli.main(
        [
            "eval",
            "--checkpoint",
            str(out / "checkpoint.pth"),
            "--val-images",
            data,
            "--val-ann",
            str(bad),
            "--device",
            "cpu",
            "--quiet",
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "annotations[0] (id 5)" in err and "bbox" in err


def test_missing_checkpoint_clear_error(tmp_path, capsys):
    rc = cli.main(["predict", "img.png", "--checkpoint", str(tmp_path / "none.pth")])
    assert rc == 1 and "none.pth: checkpoint not found" in capsys.readouterr().err


def test_eval_without_data_names_the_options(trained, capsys):
    _, out = trained
    assert cli.main(["eval", "--checkpoint", str(out / "checkpoint.pth"), "--quiet"]) == 1
    assert capsys.readouterr().err == (
        "ddetr eval: error: no data: give --coco-path DIR (COCO layout) or --val-images DIR --val-ann FILE\n"
    )
