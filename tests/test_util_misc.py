"""The padded image batch (NestedTensor, nested_tensor_from_tensor_list) and small helpers
of ddetr.util.misc."""

import pytest
import torch

from ddetr.util.misc import accuracy, inverse_sigmoid, nested_tensor_from_tensor_list


def test_padding_and_mask():
    a, b = torch.rand(3, 4, 6), torch.rand(3, 5, 2)
    nt = nested_tensor_from_tensor_list([a, b])
    assert nt.tensors.shape == (2, 3, 5, 6) and nt.mask.shape == (2, 5, 6) and nt.mask.dtype == torch.bool
    assert torch.equal(nt.tensors[0, :, :4, :6], a) and torch.equal(nt.tensors[1, :, :5, :2], b)
    assert (nt.tensors[0, :, 4:] == 0).all() and (nt.tensors[1, :, :, 2:] == 0).all()
    assert not nt.mask[0, :4].any() and nt.mask[0, 4:].all()
    assert not nt.mask[1, :, :2].any() and nt.mask[1, :, 2:].all()
    tensors, mask = nt.decompose()
    assert tensors is nt.tensors and mask is nt.mask
    assert len(nt) == 2 and nt.device == torch.device("cpu") and "NestedTensor" in repr(nt)
    moved = nt.to("cpu")
    assert torch.equal(moved.tensors, nt.tensors) and torch.equal(moved.mask, nt.mask)


def test_dtype_kept_and_size_divisibility():
    nt = nested_tensor_from_tensor_list([torch.rand(3, 5, 7, dtype=torch.float64)], size_divisibility=4)
    assert nt.tensors.dtype == torch.float64 and nt.tensors.shape == (1, 3, 8, 8)
    assert nt.mask[0, 5:].all() and nt.mask[0, :, 7:].all() and not nt.mask[0, :5, :7].any()


@pytest.mark.parametrize(
    "bad,match",
    [
        ([], "empty"),
        ([torch.rand(4, 4)], r"tensor_list\[0\] must be a \(C, H, W\) tensor"),
        ([torch.rand(3, 4, 4), "x"], r"tensor_list\[1\]"),
        ([torch.rand(3, 4, 4), torch.rand(1, 4, 4)], "same number of channels"),
    ],
)
def test_bad_lists(bad, match):
    with pytest.raises(ValueError, match=match):
        nested_tensor_from_tensor_list(bad)


def test_inverse_sigmoid():
    x = torch.tensor([0.0, 0.25, 0.5, 0.9, 1.0])
    y = inverse_sigmoid(x)
    assert torch.allclose(y[1:4].sigmoid(), x[1:4], atol=1e-6)
    # clamped with eps 1e-5 as the official code: finite at 0 and 1
    assert torch.allclose(y[[0, 4]], torch.tensor([-1.0, 1.0]) * torch.log(torch.tensor((1 - 1e-5) / 1e-5)), rtol=1e-4)
    assert torch.isfinite(inverse_sigmoid(torch.tensor([-0.5, 1.5]))).all()


def test_accuracy():
    logits = torch.tensor([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    assert accuracy(logits, torch.tensor([1, 0, 0]))[0].item() == pytest.approx(200 / 3)
    assert accuracy(logits, torch.zeros(0, dtype=torch.long))[0].item() == 0
