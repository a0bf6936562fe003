"""optimize_for_inference: a Deformable DETR made fast for inference. Frozen batch norms are
folded into the convolutions before them, the model runs in float32, bfloat16 or float16
(autocast, with float32 islands where precision matters) and is compiled by torch.compile
with dynamic shapes, so new image sizes reuse the compiled code.

    fast = ddetr.optimize_for_inference(model.eval(), dtype=torch.bfloat16)
    outputs = fast(images)        # as model(images): a list of images or a NestedTensor
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .models import config
from .models.backbone import BasicBlock, Bottleneck, FrozenBatchNorm2d, ResNet
from .models.deformable_detr import DeformableDETR, check_samples
from .util.misc import NestedTensor

__all__ = ["optimize_for_inference", "OptimizedDETR", "fold_frozen_batch_norms", "DTYPES"]

DTYPES = tuple(getattr(torch, name) for name in config.DTYPES)

# Options of the inductor compile. Freezing turns the (folded) weights into constants, so
# inductor pre-packs them for oneDNN and casts them to the autocast dtype once, not per call.
INDUCTOR_OPTIONS = {"freezing": True}


def _fold(conv: nn.Conv2d, bn: FrozenBatchNorm2d) -> None:
    """conv <- bn(conv(.)): scale the output channels' weights, move the shift into the
    bias. Computed in float64, then stored in the conv's dtype."""
    w = conv.weight.detach().double()
    scale = bn.weight.double() * (bn.running_var.double() + bn.eps).rsqrt()
    bias = bn.bias.double() - bn.running_mean.double() * scale
    if conv.bias is not None:
        bias = bias + conv.bias.detach().double() * scale
    conv.weight = nn.Parameter((w * scale[:, None, None, None]).to(conv.weight.dtype), requires_grad=False)
    conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)


def fold_frozen_batch_norms(model: nn.Module) -> int:
    """Folds, in place, each FrozenBatchNorm2d that directly follows a convolution into it
    and replaces the batch norm by nn.Identity. Returns how many were folded.

    The pairs are known by structure, not guessed from names in arbitrary modules: in
    ddetr's ResNet and its blocks `bnK` normalises `convK`'s output, and in an nn.Sequential
    (the downsample path) a batch norm follows its convolution. A frozen batch norm anywhere
    else is left as it is (still correct, just not folded)."""
    folded = 0
    for module in model.modules():
        pairs = []
        if isinstance(module, (ResNet, BasicBlock, Bottleneck)):
            for name, child in module.named_children():
                conv = getattr(module, "conv" + name[2:], None) if name.startswith("bn") else None
                if isinstance(child, FrozenBatchNorm2d) and isinstance(conv, nn.Conv2d):
                    pairs.append((conv, name))
        elif isinstance(module, nn.Sequential) and not isinstance(module, nn.ModuleList):
            children = list(module.named_children())
            for (_, prev), (name, child) in zip(children, children[1:]):
                if isinstance(prev, nn.Conv2d) and isinstance(child, FrozenBatchNorm2d):
                    pairs.append((prev, name))
        for conv, name in pairs:
            _fold(conv, getattr(module, name))
            setattr(module, name, nn.Identity())
            folded += 1
    return folded


class _Float32(nn.Module):
    """Runs `module` in float32 with autocast off: the box and class heads and the initial
    reference points, so box arithmetic, sampling locations and the sigmoid outputs keep
    float32 precision whatever the surrounding layers compute in."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x):
        with torch.autocast(x.device.type, enabled=False):
            return self.module(x.float())


def _keep_float32(model: DeformableDETR) -> None:
    # Without box refinement the ModuleLists repeat one head; wrap each distinct head once.
    # The decoder (refinement, two-stage) holds the same ModuleList objects, so it sees the
    # wrapped heads too.
    wrapped = {}
    for heads in (model.class_embed, model.bbox_embed):
        for i, head in enumerate(heads):
            wrapped.setdefault(id(head), _Float32(head))
            heads[i] = wrapped[id(head)]
    if not model.two_stage:
        model.transformer.reference_points = _Float32(model.transformer.reference_points)


def _check_model(model) -> None:
    if not isinstance(model, DeformableDETR):
        raise TypeError(f"optimize_for_inference takes a ddetr DeformableDETR, got {type(model).__name__}")
    if model.training:
        raise ValueError("the model is in training mode (dropout on): call model.eval() before optimize_for_inference")
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            raise ValueError(
                f"cannot optimise a model with a trainable batch norm ({name}: {type(m).__name__}): "
                "only FrozenBatchNorm2d (fixed statistics, as ddetr's backbone uses) is folded "
                "into its convolution"
            )
    dtypes = {p.dtype for p in model.parameters()} | {b.dtype for b in model.buffers() if b.is_floating_point()}
    if dtypes != {torch.float32}:
        raise ValueError(
            f"expected a float32 model, got parameters/buffers of {sorted(map(str, dtypes))}: "
            "optimize_for_inference applies `dtype` itself"
        )


class _Runner(nn.Module):
    """The model under autocast to `dtype`, on a padded batch: what gets compiled."""

    def __init__(self, model: DeformableDETR, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype
        self.device_type = next(model.parameters()).device.type

    def forward(self, tensors: torch.Tensor, mask: torch.Tensor) -> dict:
        with torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype != torch.float32):
            return self.model(NestedTensor(tensors, mask))


class OptimizedDETR:
    """The callable optimize_for_inference returns: `fast(samples)` takes what the model
    takes (a list of (3, H, W) images, a (B, 3, H, W) batch, or a NestedTensor) and returns
    the same outputs dict, all in float32. `fast.model` is the folded copy it runs (in
    half precision its heads are wrapped, so its state_dict names differ)."""

    def __init__(self, model: DeformableDETR, dtype: torch.dtype, compiled: bool, backend, dynamic: bool):
        self.model, self.dtype, self.compiled = model, dtype, compiled
        self._run = _Runner(model, dtype)
        if compiled:
            options = INDUCTOR_OPTIONS if backend == "inductor" else None
            self._run = torch.compile(self._run, backend=backend, fullgraph=True, dynamic=dynamic, options=options)

    @torch.no_grad()
    def __call__(self, samples) -> dict:
        # Padding happens here, outside the compiled code: it then sees two tensors, and a
        # list of images of any sizes or count costs no recompile beyond the batch's shape.
        samples = check_samples(samples)
        return self._run(samples.tensors, samples.mask)

    def __repr__(self) -> str:
        return f"OptimizedDETR(dtype={self.dtype}, compiled={self.compiled}, model={type(self.model).__name__})"


def optimize_for_inference(
    model: DeformableDETR,
    dtype: torch.dtype = torch.float32,
    compile: bool = True,
    *,
    dynamic: bool = True,
    backend="inductor",
) -> OptimizedDETR:
    """A fast inference callable for `model` (a DeformableDETR in eval mode, float32).

    The model passed in is left unchanged: a deep copy is folded and compiled. `dtype`
    (float32, bfloat16 or float16) is what the convolutions, linear layers and the
    decoder's self-attention run in, by autocast; the heads and the initial reference
    points stay float32 (see _Float32), and so do the sampling locations, which add float32
    reference points: the deformable attention op takes its value and weights in `dtype`
    and its locations in float32 (the op's precision policy, ddetr.ops). With
    `compile`, torch.compile (`backend`, inductor with freezing by default) traces the whole
    forward as one graph; the first call compiles (minutes on a CPU).

    `dynamic=True` (the default) compiles with symbolic image sizes, so every later size
    reuses that code; batch size 1 is specialised, so a larger batch compiles once more.
    Size buckets (padding images to a few sizes) were the alternative: they would change
    the outputs, since the model sees the padding through its mask. `dynamic=False`
    specialises to the first size and recompiles for each new one (each compile costs
    minutes): for inputs that all have one size.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in DTYPES]}, got {dtype}")
    _check_model(model)
    model = copy.deepcopy(model)
    fold_frozen_batch_norms(model)
    if dtype != torch.float32:
        _keep_float32(model)
    model.requires_grad_(False)
    return OptimizedDETR(model, dtype, compile, backend, dynamic)
