"""Every mistake a user can make ends in one line, `ddetr <command>: error: ...`, exit
status 1 and no traceback, and loses nothing that was on disk. A subprocess per case, as a
user runs it, where the case gets as far as training or a loader worker; `cli.main` in this
process where it stops before (an uncaught exception fails the test just the same), to keep
the file fast. The cases that need a trained checkpoint use the shared one (a copy where
they change it)."""

import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import SYNTHETIC, TINY_CLI, TINY_MODEL, TINY_TRAIN, ddetr, ddetr_here, images, one_error
from ddetr.data.coco import load_image

TRAIN = [*TINY_TRAIN, "--max-steps", "1"]


def _json(path, data):
    path.write_text(json.dumps(data))
    return path


def _train_json(data):
    return json.loads(open(os.path.join(data, "annotations", "instances_train2017.json")).read())


# 1. nothing lost or overwritten


def test_existing_checkpoint_is_not_replaced(trained, tmp_path):
    out = tmp_path
    shutil.copy(trained.checkpoint, out / "checkpoint.pth")
    before = (out / "checkpoint.pth").stat().st_mtime_ns
    one_error(
        ddetr("train", "--coco-path", trained.data, "--output-dir", out, *TRAIN),
        "train",
        "checkpoint.pth",
        "--resume auto",
        "--overwrite",
    )
    assert (out / "checkpoint.pth").stat().st_mtime_ns == before


def test_resume_applies_a_new_lr_and_epochs_done_writes_nothing(trained, tmp_path):
    data = trained.data
    shutil.copy(trained.checkpoint, tmp_path / "checkpoint.pth")
    rc, stdout, err = ddetr(
        "train",
        "--coco-path",
        data,
        "--output-dir",
        tmp_path,
        "--resume",
        "auto",
        *TRAIN,
        "--epochs",
        "2",
        "--lr",
        "1e-3",
        "--eval-every",
        "0",
    )
    assert rc == 0, err
    assert "applied --lr 0.001 (the checkpoint's: 0.0002)" in stdout
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["args"]["lr"] == 1e-3
    assert ckpt["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert ckpt["lr_scheduler"]["base_lrs"][0] == pytest.approx(1e-3)
    # already done: says so, and claims no checkpoint
    rc, stdout, err = ddetr(
        "train",
        "--coco-path",
        data,
        "--output-dir",
        tmp_path,
        "--resume",
        "auto",
        *TRAIN,
        "--epochs",
        "2",
        "--lr",
        "1e-3",
    )
    assert rc == 0 and "nothing to train" in stdout and "checkpoint " + str(tmp_path) not in stdout
    # a model option that does not fit the checkpoint: named, briefly
    hidden, queries = 2 * TINY_MODEL["hidden_dim"], 2 * TINY_MODEL["num_queries"]
    line = one_error(
        ddetr(
            "train",
            "--coco-path",
            data,
            "--output-dir",
            tmp_path,
            "--resume",
            "auto",
            *TRAIN,
            "--hidden-dim",
            hidden,
            "--num-queries",
            queries,
        ),
        "train",
        f"--hidden-dim {TINY_MODEL['hidden_dim']} (given: {hidden})",
        f"--num-queries {TINY_MODEL['num_queries']} (given: {queries})",
    )
    assert len(line) < 250


def test_predict_keeps_good_images_and_names_pictures_apart(trained, tmp_path):
    for d in ("a", "b"):
        os.makedirs(tmp_path / d)
        shutil.copy(images(trained.data)[0], tmp_path / d / "pic.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    res = ddetr(
        "predict",
        tmp_path / "a" / "pic.png",
        tmp_path / "bad.png",
        tmp_path / "b" / "pic.png",
        "--checkpoint",
        trained.checkpoint,
        "--output-dir",
        tmp_path / "out",
        "--threshold",
        "0",
    )
    one_error(res, "predict", "1 of 3 image(s)", "bad.png", "detections.json")
    dets = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [bool(d["detections"]) for d in dets] == [True, False, True] and "error" in dets[1]
    assert dets[0]["output"] != dets[2]["output"]
    assert sorted(os.listdir(tmp_path / "out")) == ["detections.json", "pic.png", "pic_2.png"]


# 2. garbage in, silence out


def test_16_bit_grayscale_is_scaled(tmp_path):
    path = tmp_path / "g16.png"
    ramp = np.linspace(0, 65535, 64 * 8).reshape(8, 64).astype(np.uint16)
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")  # 16 bits per pixel on disk
    rgb = np.asarray(load_image(str(path), 0))
    assert rgb.shape == (8, 64, 3)
    assert rgb[..., 0].min() == 0 and rgb[..., 0].max() == 255
    np.testing.assert_allclose(rgb[..., 0], ramp / 257, atol=0.51)


def test_nothing_to_learn_from(synthetic_data, tmp_path):
    src = _train_json(synthetic_data)
    train_images = os.path.join(synthetic_data, "train2017")
    cases = {
        "no images": ({**src, "images": [], "annotations": []}, "no images in the train set"),
        "no annotations": ({**src, "annotations": []}, "nothing to learn from"),
        "all crowd": ({**src, "annotations": [{**a, "iscrowd": 1} for a in src["annotations"]]}, "crowd (ignored)"),
        "all empty": (
            {**src, "annotations": [{**a, "bbox": [1, 1, 0, 5]} for a in src["annotations"]]},
            "with no area inside the image",
        ),
    }
    for i, (name, (ann, expected)) in enumerate(cases.items()):
        path = _json(tmp_path / f"{i}.json", ann)
        out = tmp_path / f"out{i}"
        one_error(
            ddetr_here(
                "train",
                "--train-images",
                train_images,
                "--train-ann",
                path,
                "--val-images",
                train_images,
                "--val-ann",
                path,
                "--output-dir",
                out,
                *TRAIN,
            ),
            "train",
            expected,
            f"{i}.json",
        )
        assert not (out / "checkpoint.pth").exists(), name


def test_non_finite_weights_and_threshold(trained, tmp_path):
    img = images(trained.data)[0]
    one_error(
        ddetr_here("predict", img, "--checkpoint", trained.checkpoint, "--threshold", "nan", "--output-dir", tmp_path),
        "predict",
        "--threshold",
        "nan",
    )
    ckpt = torch.load(trained.checkpoint, weights_only=True)
    ckpt["model"]["class_embed.0.bias"][0] = float("nan")
    torch.save({"model": ckpt["model"], "args": ckpt["args"]}, tmp_path / "nan.pth")
    one_error(
        ddetr_here("predict", img, "--checkpoint", tmp_path / "nan.pth", "--output-dir", tmp_path),
        "predict",
        "nan.pth",
        "class_embed.0.bias",
        "not finite",
    )


def test_divergence_stops_with_the_last_checkpoint_kept(trained, tmp_path):
    shutil.copy(trained.checkpoint, tmp_path / "checkpoint.pth")
    before = (tmp_path / "checkpoint.pth").read_bytes()
    res = ddetr(
        "train",
        "--coco-path",
        trained.data,
        "--output-dir",
        tmp_path,
        "--resume",
        "auto",
        *TRAIN,
        "--epochs",
        "3",
        "--max-steps",
        "2",
        "--lr",
        "1e30",
        "--clip-max-norm",
        "0",
        "--eval-every",
        "0",
    )
    one_error(res, "train", "not finite", "the last checkpoint was not overwritten")
    assert (tmp_path / "checkpoint.pth").read_bytes() == before


# 3. one line, not a traceback


OPTION_CASES = [
    ("--batch-size", "0"),
    ("--lr", "-1"),
    ("--lr", "inf"),
    ("--num-workers", "-1"),
    ("--image-size", "1"),
    ("--hidden-dim", "33"),
    ("--num-feature-levels", "9"),
    ("--num-queries", "0"),
    ("--backbone", "vgg16"),
    ("--epochs", "0"),
    ("--nheads", "5"),
    ("--dropout", "1.5"),
    ("--device", "cuda:99"),
    ("--device", "tpu"),
    ("--backbone-weights", "/nonexistent.pth"),
]


def test_options_out_of_range_name_the_option(tmp_path):
    """Each before any data is read: `ddetr train` would otherwise write the synthetic set."""
    for i, (flag, value) in enumerate(OPTION_CASES):
        out = tmp_path / str(i)
        run = ddetr if i == 0 else ddetr_here  # one as a user runs it
        one_error(run("train", "--output-dir", out, *TINY_CLI, flag, value), "train", flag, value)
        assert not (out / "data").exists(), flag
    for command in (["eval", "--checkpoint", "x.pth", "--coco-path", "."], ["predict", "x.png", "--checkpoint", "x"]):
        one_error(ddetr_here(*command, "--device", "nonsense"), command[0], "--device", "nonsense")


def test_bad_files_name_the_file(synthetic_data, tmp_path):
    data = synthetic_data
    train_images = os.path.join(data, "train2017")
    src = _train_json(data)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100000 + "]" * 100000)
    area = _json(tmp_path / "area.json", {**src, "annotations": [{**src["annotations"][0], "area": "big"}]})
    (tmp_path / "file").write_text("")
    (tmp_path / "notweights.pth").write_bytes(b"junk")
    common = ["--val-images", train_images, "--val-ann"]
    cases = [
        (["--train-images", train_images, "--train-ann", tmp_path, *common, tmp_path], str(tmp_path), "folder"),
        (["--train-images", train_images, "--train-ann", nested, *common, nested], "nested.json", "nested"),
        (["--train-images", train_images, "--train-ann", area, *common, area], "area.json", "'area'"),
        (["--coco-path", data, "--output-dir", tmp_path / "file"], "--output-dir", "is a file"),
        (["--coco-path", data, "--output-dir", tmp_path / "file" / "sub"], "--output-dir", "file"),
        (["--coco-path", data, "--backbone-weights", tmp_path / "notweights.pth"], "notweights.pth", "resnet18"),
    ]
    for args, *parts in cases:
        if "--output-dir" not in args:
            args = [*args, "--output-dir", tmp_path / "o"]
        one_error(ddetr_here("train", *args, *TRAIN), "train", *parts)


def test_bad_image_found_at_start_and_by_check_data(synthetic_data, tmp_path):
    data = synthetic_data
    bad = tmp_path / "coco"
    shutil.copytree(data, bad)
    first = sorted(os.listdir(bad / "train2017"))[0]
    (bad / "train2017" / first).write_bytes(b"broken")
    one_error(ddetr("train", "--coco-path", bad, "--output-dir", tmp_path / "o", *TRAIN), "train", first)
    assert not (tmp_path / "o" / "checkpoint.pth").exists()
    rc, stdout, err = run = ddetr("check-data", "--coco-path", bad)
    one_error(run, "check-data", "1 unreadable or mis-sized image")
    assert first in stdout and "train:" in stdout and "val:" in stdout
    rc, stdout, err = ddetr("check-data", "--coco-path", data)
    n = SYNTHETIC["num_train"]
    assert rc == 0 and f"{n} image(s), {n} with a usable box" in stdout, err


def test_a_data_error_in_a_loader_worker_is_one_line(synthetic_data, tmp_path):
    src = _train_json(synthetic_data)
    # a header that reads but pixels that do not: found only when a worker decodes it
    folder = tmp_path / "images"
    shutil.copytree(os.path.join(synthetic_data, "train2017"), folder)
    name = src["images"][0]["file_name"]
    blob = (folder / name).read_bytes()
    (folder / name).write_bytes(blob[: len(blob) // 2])
    ann = _json(tmp_path / "a.json", src)
    res = ddetr(
        "train",
        "--train-images",
        folder,
        "--train-ann",
        ann,
        "--val-images",
        folder,
        "--val-ann",
        ann,
        "--output-dir",
        tmp_path / "o",
        *TRAIN,
        "--num-workers",
        "1",
        "--max-steps",
        "2",
    )
    one_error(res, "train", name, "worker")


def test_bad_checkpoints(trained, tmp_path):
    data = trained.data
    img = images(data)[0]
    ckpt = torch.load(trained.checkpoint, weights_only=True)
    hidden, other = TINY_MODEL["hidden_dim"], 2 * TINY_MODEL["hidden_dim"]
    torch.save({"model": [1, 2], "args": ckpt["args"]}, tmp_path / "list.pth")
    torch.save({"model": ckpt["model"], "args": {**ckpt["args"], "hidden_dim": -3}}, tmp_path / "opts.pth")
    torch.save({"model": ckpt["model"], "args": {**ckpt["args"], "hidden_dim": other}}, tmp_path / "fit.pth")
    # saved options that contradict the weights are named with what the weights have
    for name, *parts in [
        ("list.pth", "not a state dict"),
        ("opts.pth", "hidden_dim=-3", f"hidden_dim={hidden}"),
        ("fit.pth", f"hidden_dim={other}", f"hidden_dim={hidden}"),
    ]:
        line = one_error(
            ddetr_here("predict", img, "--checkpoint", tmp_path / name, "--output-dir", tmp_path / "p"),
            "predict",
            name,
            *parts,
        )
        assert len(line) < 400
    one_error(
        ddetr_here("eval", "--checkpoint", tmp_path / "fit.pth", "--coco-path", data, "--output-dir", tmp_path),
        "eval",
        "fit.pth",
        f"hidden_dim={other}",
    )


# 4. consistency


def test_checkpoint_and_log_keep_the_umask(trained):
    out = trained.dir
    mode = stat.S_IMODE(os.stat(out / "checkpoint.pth").st_mode)
    assert mode == stat.S_IMODE(os.stat(out / "log.txt").st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
