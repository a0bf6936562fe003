"""`ddetr export`: model options from the checkpoint, clear errors for bad input."""

import pytest
import torch

from ddetr import cli
from export_cases import TINY, assert_matches, inputs, reference, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    model = tiny_model("single_scale")
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pth"
    torch.save({"model": model.state_dict(), "args": {**TINY, "num_feature_levels": 1}}, path)
    return model, str(path)


def test_export_onnx_from_checkpoint(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("onnxscript", reason="the export extra is not installed")
    model, path = checkpoint
    out = str(tmp_path / "model.onnx")
    assert cli.main(["export", "--checkpoint", path, "--output", out, "--image-size", "96", "128"]) == 0
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    images, mask, sizes = inputs(1, 112, 144)
    got = session.run(None, {"images": images.numpy(), "mask": mask.numpy()})
    assert_matches(got, reference(model, images, mask, sizes)[:2])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--image-size", "32"], "below this model's minimum side 33"),  # single scale: stride 32
        (["--image-size", "1", "2", "3"], "takes H or H W"),
        (["--format", "aoti", "--attention", "tensorrt"], "ONNX options"),
        (["--opset", "12"], "opset must be in"),
    ],
    ids=["small_image", "image_size_arity", "aoti_onnx_option", "opset"],
)
def test_bad_input(checkpoint, tmp_path, capsys, argv, message):
    _, path = checkpoint
    argv = ["export", "--checkpoint", path, "--output", str(tmp_path / "m.onnx"), *argv]
    if "aoti" in argv:
        argv[argv.index("--output") + 1] = str(tmp_path / "m.pt2")
    assert cli.main(argv) == 1
    assert message in capsys.readouterr().err


def test_checkpoint_that_does_not_fit(checkpoint, tmp_path, capsys):
    model, _ = checkpoint
    bad = tmp_path / "bad.pth"
    torch.save({"model": model.state_dict(), "args": {**TINY, "num_feature_levels": 4}}, bad)
    assert cli.main(["export", "--checkpoint", str(bad), "--output", str(tmp_path / "m.onnx")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("ddetr export: error: ") and "bad.pth" in err
    assert "num_feature_levels=4" in err and "num_feature_levels=1" in err  # saved vs the weights
