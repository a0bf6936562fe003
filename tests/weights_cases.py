"""Small Deformable DETR models of each variant and a padded batch, shared by the weights
tests: a ResNet-18, one encoder and two decoder layers, hidden size 64."""

import torch

from ddetr.util.misc import nested_tensor_from_tensor_list

VARIANTS = {
    "default": dict(),
    "single-scale": dict(num_feature_levels=1),
    "box-refine": dict(with_box_refine=True),
    "two-stage": dict(with_box_refine=True, two_stage=True),
}
SMALL = dict(
    backbone="resnet18", enc_layers=1, dec_layers=2, hidden_dim=64, dim_feedforward=128, num_queries=12, num_classes=5
)


def small_model(variant, seed=0, **overrides):
    """A small ddetr model in eval mode whose every tensor is moved off its initial value, so
    that tied-at-init heads (refinement clones), zero-initialised weights and unit batch-norm
    statistics cannot hide a tensor sent to the wrong place."""
    from ddetr.models import build_model

    torch.manual_seed(seed)
    model = build_model(**dict(SMALL, **VARIANTS[variant], **overrides)).eval()
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
