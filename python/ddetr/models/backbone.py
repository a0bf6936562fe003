"""ResNet backbone with frozen BatchNorm, written with torchvision's parameter names so that
torchvision's and the official Deformable DETR weights load as they are (there is no
torchvision dependency). Returns C3..C5 (strides 8, 16, 32) with their padding masks."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..util.misc import NestedTensor
from .config import RESNETS
from .position_encoding import build_position_encoding


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm2d with fixed statistics and affine parameters, all buffers. Detection
    batches are too small to estimate statistics, so the ImageNet ones are kept."""

    def __init__(self, n: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(n))
        self.register_buffer("bias", torch.zeros(n))
        self.register_buffer("running_mean", torch.zeros(n))
        self.register_buffer("running_var", torch.ones(n))

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # torchvision's BatchNorm2d saves a step counter we have no use for.
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale[None, :, None, None] + bias[None, :, None, None]

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


def _conv3x3(cin, cout, stride=1, dilation=1):
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        if dilation > 1:
            raise ValueError("dilation is not supported by resnet18/34 (BasicBlock)")
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5: the stride sits on the 3x3 conv, as in torchvision."""

    expansion = 4

    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = FrozenBatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride, dilation)
        self.bn2 = FrozenBatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = FrozenBatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}  # config.RESNETS' block names


class ResNet(nn.Module):
    """torchvision's ResNet without the classifier (`fc`); forward returns the outputs of
    the layers named in `return_layers` as a dict."""

    def __init__(self, name: str = "resnet50", dilation: bool = False, return_layers=("layer2", "layer3", "layer4")):
        super().__init__()
        if name not in RESNETS:
            raise ValueError(f"backbone must be one of {sorted(RESNETS)}, got {name!r}")
        block, depths = RESNETS[name]
        block = BLOCKS[block]
        self.return_layers = tuple(return_layers)
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = FrozenBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, depths[0])
        self.layer2 = self._make_layer(block, 128, depths[1], 2)
        self.layer3 = self._make_layer(block, 256, depths[2], 2)
        self.layer4 = self._make_layer(block, 512, depths[3], 2, dilate=dilation)
        self.channels = {f"layer{i + 1}": c * block.expansion for i, c in enumerate((64, 128, 256, 512))}
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes, blocks, stride=1, dilate=False):
        previous_dilation = self.dilation
        if dilate:  # keep the resolution, grow the receptive field instead (DC5)
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                FrozenBatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous_dilation)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
            if name in self.return_layers:
                out[name] = x
            if name == self.return_layers[-1]:
                break
        return out


def load_torchvision_weights(body: ResNet, path_or_state_dict) -> None:
    """Load a torchvision ResNet state_dict (a path or a dict) into `body`; the classifier
    (`fc.*`) is dropped, everything else must match."""
    state = path_or_state_dict
    if not isinstance(state, dict):
        state = torch.load(state, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # tolerate common wrappers
        if key in state and isinstance(state[key], dict):
            state = state[key]
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}
    body.load_state_dict(state, strict=True)


class Backbone(nn.Module):
    """ResNet body plus the padding mask of each returned feature map.

    `num_levels` of C3..C5 are returned (the last ones); stem and layer1 are always frozen,
    and everything is frozen when `train_backbone` is False.
    """

    def __init__(
        self,
        name: str = "resnet50",
        train_backbone: bool = True,
        num_levels: int = 3,
        dilation: bool = False,
        weights=None,
    ):
        super().__init__()
        layers = ("layer2", "layer3", "layer4")[3 - min(num_levels, 3) :]
        self.body = ResNet(name, dilation, layers)
        if weights is not None:
            load_torchvision_weights(self.body, weights)
        for pname, p in self.body.named_parameters():
            if not train_backbone or not pname.startswith(("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
        all_strides = {"layer2": 8, "layer3": 16, "layer4": 16 if dilation else 32}
        self.strides = [all_strides[n] for n in layers]
        self.num_channels = [self.body.channels[n] for n in layers]

    def forward(self, tensor_list: NestedTensor):
        xs = self.body(tensor_list.tensors)
        m = tensor_list.mask
        out = []
        for x in xs.values():
            mask = F.interpolate(m[None].float(), size=x.shape[-2:]).to(torch.bool)[0]
            out.append(NestedTensor(x, mask))
        return out


class Joiner(nn.Sequential):
    """Backbone (index 0) and position embedding (index 1): official checkpoints name the
    ResNet `backbone.0.body.*`."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.strides = backbone.strides
        self.num_channels = backbone.num_channels

    def forward(self, tensor_list: NestedTensor):
        features = self[0](tensor_list)
        pos = [self[1](f).to(f.tensors.dtype) for f in features]
        return features, pos


def build_backbone(
    backbone: str = "resnet50",
    lr_backbone: float = 2e-5,
    num_feature_levels: int = 4,
    dilation: bool = False,
    backbone_weights=None,
    position_embedding: str = "sine",
    hidden_dim: int = 256,
    position_embedding_scale: float = 2 * math.pi,
):
    pos = build_position_encoding(position_embedding, hidden_dim, position_embedding_scale)
    body = Backbone(backbone, lr_backbone > 0, num_feature_levels, dilation, backbone_weights)
    return Joiner(body, pos)
