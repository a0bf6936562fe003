"""The model traces as one graph under torch.compile (fullgraph=True, dynamic shapes) in
training mode too: no data-dependent Python, `.item()` or `.tolist()` in the forward. (The
inference path, every variant in eval mode, is held by tests/test_inference.py.) Dynamo's
"eager" backend checks the trace without paying for code generation."""

import pytest
import torch

from conftest import TINY_MODEL, tiny_model

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("variant", ["default", "two-stage"])
def test_training_forward_is_one_graph(variant):
    model = tiny_model(variant, num_classes=7).train()
    compiled = torch.compile(model, backend="eager", fullgraph=True, dynamic=True)
    gen = torch.Generator().manual_seed(0)
    images = [torch.randn(3, 256, 320, generator=gen), torch.randn(3, 224, 288, generator=gen)]
    torch.manual_seed(1)
    out = compiled(images)
    torch.manual_seed(1)  # the same dropout masks
    ref = model(images)
    torch.testing.assert_close(out["pred_boxes"], ref["pred_boxes"])
    torch.testing.assert_close(out["pred_logits"], ref["pred_logits"])
    out["pred_logits"].sum().backward()  # gradients flow through the compiled graph
    assert model.class_embed[TINY_MODEL["dec_layers"] - 1].weight.grad is not None
