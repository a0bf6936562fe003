"""Weights from anywhere on the command line: `ddetr convert` both ways, predict / eval
with an HF folder and an official file (the same detections as the ddetr checkpoint), and
fine-tuning with `train --pretrained` from a 91-class checkpoint to a 3-class data set
whose category ids are not COCO's."""

import argparse
import json
import os
import shutil

import pytest
import torch

from conftest import TINY_MODEL, ddetr, images, tiny_model
from ddetr import cli, weights

pytest.importorskip("safetensors", reason="safetensors is not installed: pip install '.[hf]'")

RUN = ["--num-workers", "0", "--device", "cpu", "--quiet", "--image-size", "64"]
CATEGORY_IDS = {1: 1001, 2: 2002, 3: 3003}  # beyond 255: labels 0..2 map through the categories


@pytest.fixture(scope="module")
def setup(synthetic_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("cliw")
    data = str(root / "syn")
    shutil.copytree(synthetic_data, data)
    for split in ("train", "val"):  # any category ids, not only COCO's
        path = os.path.join(data, "annotations", f"instances_{split}2017.json")
        js = json.load(open(path))
        for c in js["categories"]:
            c["id"] = CATEGORY_IDS[c["id"]]
        for a in js["annotations"]:
            a["category_id"] = CATEGORY_IDS[a["category_id"]]
        json.dump(js, open(path, "w"))
    coco = tiny_model(num_classes=91)  # saved as the official code does: args in a Namespace
    pretrained = root / "coco91.pth"
    torch.save({"model": coco.state_dict(), "args": argparse.Namespace(**TINY_MODEL, dataset_file="coco")}, pretrained)
    return root, data, pretrained


@pytest.fixture(scope="module")
def finetuned(setup):
    root, data, pretrained = setup
    out = root / "ft"
    # no model options: the architecture comes from the weights, the class count from the data
    rc, stdout, stderr = ddetr(
        "train",
        "--pretrained",
        pretrained,
        "--coco-path",
        data,
        "--output-dir",
        out,
        "--epochs",
        3,
        "--batch-size",
        2,
        "--lr",
        1e-3,
        "--eval-every",
        3,
        *RUN,
    )
    assert rc == 0, stderr
    return out, stdout


def test_finetune_reports_skipped_heads_and_trains(finetuned):
    out, stdout = finetuned
    line = next(s for s in stdout.splitlines() if s.startswith("pretrained:"))
    assert "coco91.pth" in line and "skipped the class heads" in line
    assert "91 classes in the weights, 3 in the model" in line
    log = [json.loads(s) for s in (out / "log.txt").read_text().splitlines()]
    assert len(log) == 3 and log[-1]["train_loss"] < 0.9 * log[0]["train_loss"], [e["train_loss"] for e in log]
    args = torch.load(out / "checkpoint.pth", weights_only=True)["args"]
    assert args["hidden_dim"] == TINY_MODEL["hidden_dim"] and args["nheads"] == TINY_MODEL["nheads"]
    assert args["num_classes"] == 3
    assert args["dataset"]["label_to_category"] == {0: 1001, 1: 2002, 2: 3003}
    assert 0 <= json.loads((out / "metrics.json").read_text())["AP"] <= 1


def test_finetuned_predict_names_and_category_ids(setup, finetuned, tmp_path):
    _, data, _ = setup
    out, _ = finetuned
    image = images(data)[0]
    rc, stdout, stderr = ddetr(
        "predict", image, "--checkpoint", out / "checkpoint.pth", "--threshold", 0, "--output-dir", tmp_path
    )
    assert rc == 0, stderr
    dets = json.loads((tmp_path / "detections.json").read_text())[0]["detections"]
    assert dets and {(d["name"], d["category_id"]) for d in dets} <= {
        ("circle", 1001),
        ("square", 2002),
        ("triangle", 3003),
    }
    assert dets[0]["name"] in stdout.splitlines()[0]  # the printed line names the classes


def test_resume_wins_over_pretrained(setup, finetuned):
    _, data, pretrained = setup
    out, _ = finetuned
    rc = cli.main(
        [
            "train",
            "--pretrained",
            str(pretrained),
            "--resume",
            "auto",
            "--coco-path",
            data,
            "--output-dir",
            str(out),
            "--epochs",
            "3",
            *RUN,
        ]
    )
    assert rc == 0


def test_pretrained_that_does_not_fit_is_one_clear_error(setup, tmp_path, capsys):
    _, data, pretrained = setup
    rc = cli.main(
        [
            "train",
            "--pretrained",
            str(pretrained),
            "--hidden-dim",
            str(2 * TINY_MODEL["hidden_dim"]),
            "--coco-path",
            data,
            "--output-dir",
            str(tmp_path),
            "--epochs",
            "1",
            *RUN,
        ]
    )
    err = capsys.readouterr().err
    assert rc != 0 and len(err.strip().splitlines()) == 1, err
    assert "--pretrained" in err and "coco91.pth: does not fit the model" in err and "shapes:" in err


def test_convert_both_ways(setup, tmp_path):
    _, _, pretrained = setup
    rc, stdout, stderr = ddetr("convert", pretrained, tmp_path / "hf", "--to", "hf")
    assert rc == 0, stderr
    assert stdout.count("\n") == 1 and "official layout, default, resnet18, 91 classes" in stdout
    assert "config.json + model.safetensors (HF layout, transformers backbone)" in stdout
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["use_timm_backbone"] is False
    assert config["encoder_attention_heads"] == TINY_MODEL["nheads"]  # from the args
    rc, stdout, stderr = ddetr("convert", tmp_path / "hf", tmp_path / "back.pth", "--to", "official")
    assert rc == 0, stderr
    assert "hf layout (transformers backbone names)" in stdout and "back.pth (official layout)" in stdout
    original = torch.load(pretrained, weights_only=False)["model"]
    back, info = weights.load(tmp_path / "back.pth")
    assert back.keys() == original.keys() and all(torch.equal(back[k], original[k]) for k in original)
    assert info.options["nheads"] == TINY_MODEL["nheads"]  # kept in the converted file's args


def test_convert_bad_file_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    assert cli.main(["convert", str(tmp_path / "junk.pth"), str(tmp_path / "hf"), "--to", "hf"]) == 1
    out, err = capsys.readouterr()
    assert not out and len(err.strip().splitlines()) == 1 and "junk.pth: cannot read weights" in err


def test_convert_destination_of_the_wrong_kind(setup, tmp_path, capsys):
    _, _, pretrained = setup
    assert cli.main(["convert", str(pretrained), str(tmp_path / "x.pth"), "--to", "hf"]) == 1
    assert "x.pth: --to hf writes a folder" in capsys.readouterr().err
    assert cli.main(["convert", str(pretrained), str(tmp_path / "folder"), "--to", "official"]) == 1
    assert "folder: --to official writes a file ending in .pth" in capsys.readouterr().err
    assert not os.listdir(tmp_path)


def test_predict_and_eval_take_either_layout(setup, finetuned, tmp_path):
    """The fine-tuned checkpoint, and the same weights as an HF folder and an official file:
    the same detections, class names and category ids, and the same metrics."""
    root, data, _ = setup
    out, _ = finetuned
    paths = {"ddetr": out / "checkpoint.pth", "hf": root / "ft-hf", "official": root / "ft-official.pth"}
    weights.convert(paths["ddetr"], paths["hf"], to="hf")
    weights.convert(paths["hf"], paths["official"], to="official")
    image = images(data)[0]
    found, metrics = {}, {}
    for name, path in paths.items():
        common = ["--checkpoint", str(path), "--output-dir", str(tmp_path / name), "--device", "cpu"]
        assert cli.main(["predict", image, *common, "--threshold", "0", "--image-size", "64"]) == 0
        found[name] = json.loads((tmp_path / name / "detections.json").read_text())[0]["detections"]
        if name != "official":
            assert (
                cli.main(["eval", *common, "--coco-path", data, "--image-size", "64", "--num-workers", "0", "--quiet"])
                == 0
            )
            metrics[name] = json.loads((tmp_path / name / "metrics.json").read_text())
    assert found["ddetr"] and found["hf"] == found["ddetr"] and found["official"] == found["ddetr"]
    assert {(d["name"], d["category_id"]) for d in found["hf"]} <= {
        ("circle", 1001),
        ("square", 2002),
        ("triangle", 3003),
    }
    assert {k: metrics["hf"][k] for k in ("AP", "AP50", "images")} == {
        k: metrics["ddetr"][k] for k in ("AP", "AP50", "images")
    }
