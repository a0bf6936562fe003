"""The tiny model (conftest.py) of each variant with every tensor moved, and a padded batch,
shared by the weights tests."""

import torch

from conftest import tiny_model
from ddetr.util.misc import nested_tensor_from_tensor_list

NUM_CLASSES = 5


def small_model(variant, seed=0, **overrides):
    """The tiny model in eval mode, NUM_CLASSES classes unless overridden, every tensor moved
    off its initial value, so that tied-at-init heads (refinement clones), zero-initialised
    weights and unit batch-norm statistics cannot hide a tensor sent to the wrong place."""
    model = tiny_model(variant, seed, **{"num_classes": NUM_CLASSES, **overrides})
    perturb(model.state_dict().items())
    return model


def perturb(named_tensors, scale=0.02):
    seen = set()
    with torch.no_grad():
        for name, t in named_tensors:
            if t.data_ptr() in seen or not t.is_floating_point():
                continue
            seen.add(t.data_ptr())
            t.add_(scale * torch.randn_like(t))
            if "running_var" in name:
                t.abs_()


def padded_batch():
    """Two images of different sizes, padded into one batch with its mask."""
    g = torch.Generator().manual_seed(3)
    return nested_tensor_from_tensor_list([torch.randn(3, 96, 128, generator=g), torch.randn(3, 128, 80, generator=g)])


def assert_rel_close(actual, expected, tol=1e-5):
    err = (actual - expected).abs().max().item()
    assert err <= tol * expected.abs().max().item(), (err, expected.abs().max().item())
