"""Nothing lost, second pass: every file ddetr writes is written whole or not at all, nothing
is replaced unless --overwrite is given, every file read is checked field by field, and each
mistake of the newer commands (convert, export, --pretrained, --dtype, HF folders, resume)
ends in one line, exit status 1, no traceback, and the files on disk byte-identical.

A full disk is simulated with a file-size limit (RLIMIT_FSIZE) on a subprocess: Python
ignores SIGXFSZ, so a write past the limit fails with EFBIG as on a full device."""

import json
import os
import resource
import shutil
import subprocess
import sys

import pytest
import torch
from PIL import Image

from ddetr import weights
from test_cli_errors import TRAIN, ddetr, ddetr_here, one_error


def snapshot(*roots) -> dict:
    """Every file under `roots` (files or folders) -> its bytes: what must not change."""
    out = {}
    for root in map(str, roots):
        paths = [root] if os.path.isfile(root) else [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
        for p in paths:
            with open(p, "rb") as f:
                out[p] = f.read()
    return out


def limited(limit: int, *args):
    """(exit status, stdout, stderr) of `python -m ddetr ARGS` unable to write a file past
    `limit` bytes, as on a full disk."""

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        [sys.executable, "-m", "ddetr", *map(str, args)], capture_output=True, text=True, timeout=600, preexec_fn=cap
    )
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A synthetic data set, a one-step run of the tiny model on it, and its weights as an
    HF folder."""
    from ddetr.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("files")
    data = make_synthetic(
        str(root / "syn"), num_train=4, num_val=2, min_image_size=48, max_image_size=64, num_classes=3
    )
    out = root / "run"
    rc, _, err = ddetr("train", "--coco-path", data, "--output-dir", out, *TRAIN)
    assert rc == 0, err
    weights.convert(out / "checkpoint.pth", root / "hf", to="hf")
    return root, data, out


# 1. a failed write keeps the previous file, and names the path and the cause


def test_full_disk_during_convert_keeps_the_previous_file(run, tmp_path):
    root, _, out = run
    dst = tmp_path / "w.pth"
    assert ddetr_here("convert", out / "checkpoint.pth", dst, "--to", "official")[0] == 0
    hf = tmp_path / "hf"
    assert ddetr_here("convert", out / "checkpoint.pth", hf, "--to", "hf")[0] == 0
    before = snapshot(tmp_path)
    for target, to in ((dst, "official"), (hf, "hf")):
        res = limited(4096, "convert", out / "checkpoint.pth", target, "--to", to, "--overwrite")
        one_error(res, "convert", str(target), "file too large")
    assert snapshot(tmp_path) == before  # intact, and no temporary left


def test_full_disk_during_export_keeps_the_previous_model(run, tmp_path):
    pytest.importorskip("onnxscript", reason="the export extra is not installed")
    _, _, out = run
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"the previous model")  # what an earlier export left (an export takes minutes)
    common = ["export", "--checkpoint", out / "checkpoint.pth", "--output", onnx, "--image-size", "128"]
    before = snapshot(tmp_path)
    # the exporters' warnings are hidden: a failing export prints its one line
    one_error(limited(4096, *common, "--overwrite"), "export", str(onnx), "file too large")
    assert snapshot(tmp_path) == before


def test_full_disk_during_a_log_append_leaves_the_log_whole(tmp_path):
    log = tmp_path / "log.txt"
    log.write_text('{"epoch": 0}\n')
    before = snapshot(log)
    script = (
        "import resource, sys\n"
        "from ddetr.util.files import append_line\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20, 20))\n"
        'append_line(sys.argv[1], \'{"epoch": 1, "loss": 0.123456789}\')\n'
    )
    proc = subprocess.run([sys.executable, "-c", script, str(log)], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "log.txt: cannot append: file too large" in proc.stderr
    assert snapshot(log) == before


# 2. nothing is replaced unless the user said so


def test_convert_refuses_an_existing_destination(run, tmp_path):
    root, _, out = run
    ckpt = out / "checkpoint.pth"
    (tmp_path / "w.pth").write_bytes(b"precious")
    shutil.copytree(root / "hf", tmp_path / "hf")
    before = snapshot(tmp_path, ckpt)
    one_error(ddetr_here("convert", ckpt, tmp_path / "w.pth", "--to", "official"), "convert", "w.pth", "--overwrite")
    one_error(ddetr_here("convert", ckpt, tmp_path / "hf", "--to", "hf"), "convert", "model.safetensors", "exists")
    # the source as the destination, even with --overwrite: the training checkpoint stays resumable
    one_error(
        ddetr_here("convert", ckpt, ckpt, "--to", "official", "--overwrite"), "convert", "is the source", str(ckpt)
    )
    one_error(ddetr_here("convert", tmp_path / "hf", tmp_path / "hf", "--to", "hf", "--overwrite"), "convert", "source")
    # a folder where the file goes, and a file where the folder goes
    (tmp_path / "dir.pth").mkdir()
    one_error(ddetr_here("convert", ckpt, tmp_path / "dir.pth", "--to", "official"), "convert", "dir.pth", "a file")
    one_error(ddetr_here("convert", ckpt, tmp_path / "w.pth" / "x", "--to", "hf"), "convert", "w.pth", "not a folder")
    assert snapshot(tmp_path, ckpt) == before


def test_export_refuses_its_destination_before_the_trace(run, tmp_path):
    _, _, out = run
    ckpt = out / "checkpoint.pth"
    (tmp_path / "model.onnx").write_bytes(b"precious")
    (tmp_path / "dir.onnx").mkdir()
    before = snapshot(tmp_path, ckpt)
    cases = [
        ((tmp_path / "model.onnx",), "model.onnx: exists; give --overwrite"),
        ((tmp_path / "dir.onnx", "--overwrite"), "is a folder, a file was expected"),
        ((ckpt, "--overwrite"), "is the source"),
        ((tmp_path / "m.onnx", "--image-size", "100000"), "above 16384"),
        ((tmp_path / "m.pt2", "--format", "aoti", "--image-size", "100000"), "above 16384"),
        ((tmp_path / "m.onnx", "--format", "aoti"), "must end in .pt2"),
    ]
    for (output, *rest), part in cases:
        one_error(ddetr_here("export", "--checkpoint", ckpt, "--output", output, *rest), "export", part)
    assert snapshot(tmp_path, ckpt) == before


def test_predict_that_reads_no_image_keeps_the_previous_detections(run, tmp_path):
    _, data, out = run
    image = os.path.join(data, "val2017", sorted(os.listdir(os.path.join(data, "val2017")))[0])
    common = ["--checkpoint", out / "checkpoint.pth", "--output-dir", tmp_path, "--image-size", "64"]
    assert ddetr_here("predict", image, *common)[0] == 0
    before = snapshot(tmp_path)
    (tmp_path.parent / "broken.png").write_bytes(b"not an image")
    line = one_error(ddetr_here("predict", tmp_path.parent / "broken.png", *common), "predict", "broken.png")
    assert "others" not in line and "previous one is kept" in line
    assert snapshot(tmp_path) == before


# 3. every file read is checked field by field


def test_malformed_hf_config_is_one_line_naming_the_field(run, tmp_path):
    root, data, _ = run
    image = os.path.join(data, "val2017", sorted(os.listdir(os.path.join(data, "val2017")))[0])
    config = json.loads((root / "hf" / "config.json").read_text())
    cases = {
        "list": ([config], "expected a JSON object"),
        "string_number": ({**config, "d_model": "32"}, "'d_model' is '32': expected an integer"),
        "bool_levels": ({**config, "num_feature_levels": True}, "'num_feature_levels'"),
        "levels_range": ({**config, "num_feature_levels": 9}, "<= 4"),
        "heads_differ": ({**config, "decoder_attention_heads": 8}, "ddetr uses one value for both"),
        "labels": ({**config, "id2label": {"a": "cat"}}, "'id2label'"),
        "activation": ({**config, "activation_function": "gelu"}, "'relu'"),
        "backbone_config": ({**config, "backbone_config": {"model_type": "resnet", "depths": "2"}}, "depths"),
    }
    for name, (bad, part) in cases.items():
        folder = tmp_path / name
        shutil.copytree(root / "hf", folder)
        (folder / "config.json").write_text(json.dumps(bad))
        before = snapshot(tmp_path)
        for command in (
            ["predict", image, "--checkpoint", folder, "--output-dir", tmp_path / "p"],
            ["convert", folder, tmp_path / f"{name}.pth", "--to", "official"],
        ):
            one_error(ddetr_here(*command), command[0], "config.json", part)
        assert snapshot(tmp_path) == before, name


def test_malformed_safetensors_header_names_the_entry(run, tmp_path):
    root, _, _ = run
    src = (root / "hf" / "model.safetensors").read_bytes()
    n = int.from_bytes(src[:8], "little")
    header = json.loads(src[8 : 8 + n])
    name = next(k for k in header if k != "__metadata__")
    for field, value, part in [("dtype", "F99", "dtype 'F99'"), ("data_offsets", [0, 1 << 40], "truncated?")]:
        bad = json.dumps({**header, name: {**header[name], field: value}}).encode()
        path = tmp_path / f"{field}.safetensors"
        path.write_bytes(len(bad).to_bytes(8, "little") + bad + src[8 + n :])
        one_error(ddetr_here("convert", path, tmp_path / "out", "--to", "hf"), "convert", path.name, name, part)
    assert not (tmp_path / "out").exists()


def test_random_pth_never_suggests_unsafe_loading(tmp_path):
    (tmp_path / "w.pth").write_bytes(os.urandom(4096))
    line = one_error(ddetr_here("convert", tmp_path / "w.pth", tmp_path / "hf", "--to", "hf"), "convert", "w.pth")
    assert "weights_only" not in line and "cannot read weights" in line


def test_coco_sizes_that_disagree_with_the_images_are_named(run, tmp_path):
    _, data, _ = run
    src = json.loads(open(os.path.join(data, "annotations", "instances_train2017.json")).read())
    images = os.path.join(data, "train2017")
    first = src["images"][0]
    w, h = Image.open(os.path.join(images, first["file_name"])).size
    bad = {**src, "images": [{**im, "width": 5000, "height": 3} for im in src["images"]]}
    ann = tmp_path / "sizes.json"
    ann.write_text(json.dumps(bad))
    args = ["--train-images", images, "--train-ann", ann, "--val-images", images, "--val-ann", ann]
    line = one_error(
        ddetr_here("train", *args, "--output-dir", tmp_path / "o", *TRAIN), "train", first["file_name"], "5000x3"
    )
    assert f"is {w}x{h}" in line and "nothing to learn from" not in line
    assert not (tmp_path / "o" / "checkpoint.pth").exists()


# 4. options that contradict each other are refused, not resolved silently


def test_contradicting_options_are_refused(run, tmp_path):
    root, data, out = run
    ckpt = out / "checkpoint.pth"
    image = os.path.join(data, "val2017", sorted(os.listdir(os.path.join(data, "val2017")))[0])
    cases = [
        (["eval", "--checkpoint", ckpt, "--coco-path", data, "--amp", "--dtype", "float16"], "--amp", "float16"),
        (["predict", image, "--checkpoint", ckpt, "--top-queries", "2"], "--top-queries", "--show-sampling-points"),
        (
            ["predict", image, "--checkpoint", ckpt, "--show-sampling-points", "--compile"],
            "--show-sampling-points",
            "--compile",
        ),
        (["convert", ckpt, tmp_path / "w.pth", "--to", "official", "--backbone", "timm"], "--backbone timm"),
        (["export", "--checkpoint", ckpt, "--output", tmp_path / "m.onnx", "--num-select", "5"], "--postprocess"),
        (
            ["train", "--coco-path", data, "--resume", ckpt, "--pretrained", root / "hf", *TRAIN],
            "--resume",
            "--pretrained",
        ),
    ]
    for args, *parts in cases:
        args = [*args, "--output-dir", tmp_path / "o"] if args[0] in ("eval", "predict", "train") else args
        one_error(ddetr_here(*args), args[0], *parts)
    assert not os.path.exists(tmp_path / "o" / "metrics.json") and not os.path.exists(tmp_path / "w.pth")


def test_resume_takes_what_was_not_given_and_refuses_what_contradicts(run, tmp_path):
    _, data, out = run
    shutil.copy(out / "checkpoint.pth", tmp_path / "checkpoint.pth")
    before = snapshot(tmp_path)
    base = ["train", "--coco-path", data, "--output-dir", tmp_path, "--resume", "auto", "--image-size", "64"]
    base += ["--num-workers", "0", "--device", "cpu", "--quiet", "--max-steps", "1"]
    # a model option given that contradicts the checkpoint: both values named, nothing else said
    line = one_error(ddetr_here(*base, "--two-stage"), "train", "--two-stage False (given: True)")
    assert "--hidden-dim" not in line
    # an option that changes the optimiser's parameter groups: refused before anything loads
    one_error(ddetr_here(*base, "--train-full-backbone"), "train", "--train-full-backbone", "optimiser")
    one_error(ddetr_here(*base, "--lr-backbone", "0"), "train", "--lr-backbone 0", "frozen")
    assert snapshot(tmp_path) == before
    # nothing but --epochs given: the model options come from the checkpoint, and it continues
    rc, stdout, err = ddetr(*base, "--epochs", "2", "--eval-every", "0")
    assert rc == 0, err
    ckpt = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    saved = torch.load(out / "checkpoint.pth", weights_only=True)["args"]
    assert ckpt["epoch"] == 1 and all(ckpt["args"][k] == saved[k] for k in ("hidden_dim", "num_queries", "lr"))
