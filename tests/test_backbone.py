"""ResNet backbone (torchvision names, frozen BN, C3..C5 + masks), weight loading, and the
position embeddings."""

import math

import pytest
import torch
from torch import nn

from ddetr.models import build_model
from ddetr.models.backbone import Backbone, FrozenBatchNorm2d, ResNet, build_backbone, load_torchvision_weights
from ddetr.models.position_encoding import PositionEmbeddingLearned, PositionEmbeddingSine, build_position_encoding
from ddetr.util.misc import NestedTensor, nested_tensor_from_tensor_list
from resnet_keys import torchvision_resnet50_shapes

# torchvision's parameter counts (with fc), and fc's share
TORCHVISION_PARAMS = {
    "resnet18": (11_689_512, 513_000),
    "resnet34": (21_797_672, 513_000),
    "resnet50": (25_557_032, 2_049_000),
    "resnet101": (44_549_160, 2_049_000),
}


pytestmark = pytest.mark.usefixtures("one_thread")


def test_frozen_bn_matches_batchnorm_eval_and_has_no_counter():
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(8).eval()
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.normal_()
        bn.running_var.uniform_(0.5, 2)
    fbn = FrozenBatchNorm2d(8)
    fbn.load_state_dict(bn.state_dict())  # num_batches_tracked is dropped, strict load passes
    assert "num_batches_tracked" not in fbn.state_dict()
    assert list(fbn.parameters()) == []
    x = torch.randn(2, 8, 5, 5)
    assert torch.allclose(fbn(x), bn(x), atol=1e-5)


def test_resnet50_names_and_shapes_are_torchvisions():
    body = ResNet("resnet50")
    got = {k: tuple(v.shape) for k, v in body.state_dict().items()}
    assert got == torchvision_resnet50_shapes()


@pytest.mark.parametrize("name", ["resnet18", "resnet34", "resnet50", "resnet101"])
def test_parameter_counts_match_torchvision(name):
    body = ResNet(name)
    n = sum(p.numel() for p in body.parameters())
    n += sum(b.numel() for k, b in body.named_buffers() if k.endswith(("weight", "bias")))  # BN affine
    total, fc = TORCHVISION_PARAMS[name]
    assert n == total - fc


@pytest.mark.parametrize(
    "name,channels", [("resnet18", [128, 256, 512]), ("resnet34", [128, 256, 512]), ("resnet50", [512, 1024, 2048])]
)
def test_outputs_strides_channels_and_masks(name, channels):
    torch.manual_seed(0)
    bb = Backbone(name, num_levels=3)
    assert bb.num_channels == channels and bb.strides == [8, 16, 32]
    batch = nested_tensor_from_tensor_list([torch.rand(3, 96, 128), torch.rand(3, 64, 64)])
    with torch.no_grad():
        feats = bb(batch)
    assert [tuple(f.tensors.shape) for f in feats] == [(2, c, 96 // s, 128 // s) for c, s in zip(channels, [8, 16, 32])]
    for f, s in zip(feats, [8, 16, 32]):
        assert f.mask.dtype == torch.bool and f.mask.shape == (2, 96 // s, 128 // s)
        assert not f.mask[0].any()
        # image 1 is 64x64 in a 96x128 canvas: valid exactly in the top-left 64/s square
        assert (
            not f.mask[1, : 64 // s, : 64 // s].any() and f.mask[1, 64 // s :].all() and f.mask[1, :, 64 // s :].all()
        )


def test_single_level_returns_c5_only():
    bb = Backbone("resnet18", num_levels=1)
    assert bb.num_channels == [512] and bb.strides == [32]
    with torch.no_grad():
        feats = bb(nested_tensor_from_tensor_list([torch.rand(3, 64, 64)]))
    assert len(feats) == 1 and feats[0].tensors.shape == (1, 512, 2, 2)


def test_dilation_keeps_c5_at_stride_16():
    bb = Backbone("resnet50", dilation=True)
    assert bb.strides == [8, 16, 16]
    with torch.no_grad():
        feats = bb(nested_tensor_from_tensor_list([torch.rand(3, 64, 64)]))
    assert feats[-1].tensors.shape == (1, 2048, 4, 4)
    with pytest.raises(ValueError, match="dilation"):
        Backbone("resnet18", dilation=True)


def test_frozen_layers():
    bb = Backbone("resnet18", train_backbone=True)
    for name, p in bb.body.named_parameters():
        assert p.requires_grad == name.startswith(("layer2", "layer3", "layer4")), name
    assert not any(p.requires_grad for p in Backbone("resnet18", train_backbone=False).parameters())
    # lr_backbone <= 0 freezes the whole backbone, as in the official code
    assert not any(p.requires_grad for p in build_backbone("resnet18", lr_backbone=0).parameters())


def test_unknown_backbone():
    with pytest.raises(ValueError, match="backbone must be one of"):
        ResNet("resnet42")


def test_loads_torchvision_state_dict_from_file(tmp_path):
    torch.manual_seed(0)
    src = ResNet("resnet18")
    # a torchvision-style checkpoint: fc and BN step counters included
    state = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in src.state_dict().items()}
    for k in list(state):
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
            state[k[: -len("running_var")] + "num_batches_tracked"] = torch.tensor(7)
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 512), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save(state, path)
    model = build_model(
        backbone="resnet18",
        backbone_weights=str(path),
        hidden_dim=32,
        nheads=4,
        enc_layers=1,
        dec_layers=1,
        num_queries=5,
    )
    loaded = model.backbone[0].body.state_dict()
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    # a mismatching file fails loudly
    state.pop("conv1.weight")
    with pytest.raises(RuntimeError, match="conv1.weight"):
        load_torchvision_weights(ResNet("resnet18"), state)


def test_sine_embedding_values():
    pe = PositionEmbeddingSine(128, normalize=True)
    mask = torch.zeros(1, 2, 3, dtype=torch.bool)
    pos = pe(NestedTensor(torch.zeros(1, 1, 2, 3), mask))
    assert pos.shape == (1, 256, 2, 3)
    y = (torch.tensor([1.0, 2.0]) - 0.5) / (2 + 1e-6) * 2 * math.pi
    x = (torch.tensor([1.0, 2.0, 3.0]) - 0.5) / (3 + 1e-6) * 2 * math.pi
    assert torch.allclose(pos[0, 0, :, 0], y.sin()) and torch.allclose(pos[0, 1, :, 0], y.cos())
    assert torch.allclose(pos[0, 2, :, 0], (y / 10000 ** (2 / 128)).sin())
    assert torch.allclose(pos[0, 3, :, 0], (y / 10000 ** (2 / 128)).cos())
    assert torch.allclose(pos[0, 128, 0], x.sin()) and torch.allclose(pos[0, 129, 0], x.cos())


def test_sine_embedding_ignores_padding():
    pe = build_position_encoding("sine", 64)
    alone = pe(NestedTensor(torch.zeros(1, 1, 3, 4), torch.zeros(1, 3, 4, dtype=torch.bool)))
    mask = torch.ones(1, 5, 7, dtype=torch.bool)
    mask[0, :3, :4] = False
    padded = pe(NestedTensor(torch.zeros(1, 1, 5, 7), mask))
    assert torch.allclose(padded[..., :3, :4], alone)


def test_learned_embedding_and_bad_name():
    pe = build_position_encoding("learned", 64)
    assert isinstance(pe, PositionEmbeddingLearned)
    assert pe(NestedTensor(torch.zeros(2, 1, 3, 4), None)).shape == (2, 64, 3, 4)
    with pytest.raises(ValueError, match="position_embedding"):
        build_position_encoding("fourier")
    with pytest.raises(ValueError, match="normalize"):
        PositionEmbeddingSine(normalize=False, scale=1.0)
