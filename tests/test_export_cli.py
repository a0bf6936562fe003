"""`ddetr export` of the shared trained checkpoint: model options from the checkpoint, clear
errors for bad input."""

import pytest
import torch

from conftest import ddetr_here, tiny_model
from ddetr.export import size_limits
from export_cases import assert_matches, inputs, reference

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(trained):
    """The trained checkpoint and its model, built here from the tiny options."""
    ckpt = torch.load(trained.checkpoint, weights_only=True)
    model = tiny_model(num_classes=ckpt["args"]["num_classes"])
    model.load_state_dict(ckpt["model"])
    return model, str(trained.checkpoint)


def test_export_onnx_from_checkpoint(checkpoint, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    pytest.importorskip("onnxscript", reason="the export extra is not installed")
    model, path = checkpoint
    out = str(tmp_path / "model.onnx")
    rc, _, err = ddetr_here("export", "--checkpoint", path, "--output", out, "--image-size", "96", "128")
    assert rc == 0, err
    session = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    images, mask, sizes = inputs(1, 112, 144)
    got = session.run(None, {"images": images.numpy(), "mask": mask.numpy()})
    assert_matches(got, reference(model, images, mask, sizes)[:2])


@pytest.mark.parametrize(
    "argv, message",
    [
        (None, "below this model's minimum side"),
        (["--image-size", "1", "2", "3"], "takes H or H W"),
        (["--format", "aoti", "--attention", "tensorrt"], "ONNX options"),
        (["--opset", "12"], "opset must be in"),
    ],
    ids=["small_image", "image_size_arity", "aoti_onnx_option", "opset"],
)
def test_bad_input(checkpoint, tmp_path, argv, message):
    model, path = checkpoint
    if argv is None:  # one pixel below the smallest side the model's levels allow
        low, _ = size_limits(model)
        argv, message = ["--image-size", str(low - 1)], f"{message} {low}"
    argv = ["export", "--checkpoint", path, "--output", str(tmp_path / "m.onnx"), *argv]
    if "aoti" in argv:
        argv[argv.index("--output") + 1] = str(tmp_path / "m.pt2")
    rc, _, err = ddetr_here(*argv)
    assert rc == 1 and message in err, err


def test_checkpoint_that_does_not_fit(checkpoint, tmp_path):
    model, path = checkpoint
    ckpt = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pth"
    torch.save({"model": ckpt["model"], "args": {**ckpt["args"], "num_feature_levels": 1}}, bad)
    rc, _, err = ddetr_here("export", "--checkpoint", bad, "--output", tmp_path / "m.onnx")
    assert rc == 1 and err.startswith("ddetr export: error: ") and "bad.pth" in err
    assert "num_feature_levels=1" in err and "num_feature_levels=4" in err  # saved vs the weights
