"""What gets exported: the detector as a function of plain tensors, its size limits, and
torch.export of it with dynamic batch, height and width."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from ..models.config import DEFAULTS
from ..models.deformable_detr import DeformableDETR, check_inference_model
from ..models.position_encoding import LEARNED_CELLS, PositionEmbeddingLearned
from ..models.postprocess import top_detections
from ..nn import MSDeformAttn
from ..util.misc import NestedTensor

# The largest image side an exported graph takes (its dynamic shapes' bound, and the largest
# example traced): beyond it the trace alone needs hundreds of GB.
MAX_SIDE = 16384


class ExportError(UserError, ValueError):
    """The model or the export options cannot be exported as asked (`ddetr export` prints it as
    one line)."""


class DetectorGraph(nn.Module):
    """images (B, 3, H, W) normalised float32, mask (B, H, W) bool (True on padding) ->
    pred_logits (B, Q, C), pred_boxes (B, Q, 4) normalised (cx, cy, w, h); with
    `postprocess`, also target_sizes (B, 2) (height, width) in and scores (B, K), labels
    (B, K) int64, boxes (B, K, 4) absolute (x0, y0, x1, y1) out, as ddetr's PostProcess.

    The training-only outputs (aux_outputs of the earlier decoder layers, two-stage
    enc_outputs) feed the losses and nothing at inference: they are not outputs."""

    def __init__(self, model: DeformableDETR, postprocess: bool = False, num_select: int = DEFAULTS["num_select"]):
        super().__init__()
        self.model, self.postprocess, self.num_select = model, postprocess, num_select

    def forward(self, images: torch.Tensor, mask: torch.Tensor, target_sizes: torch.Tensor | None = None):
        out = self.model(NestedTensor(images, mask))
        logits, boxes = out["pred_logits"], out["pred_boxes"]
        if not self.postprocess:
            return logits, boxes
        return (logits, boxes) + top_detections(logits, boxes, target_sizes, self.num_select)


def output_names(postprocess: bool) -> list:
    return ["pred_logits", "pred_boxes"] + (["scores", "labels", "boxes"] if postprocess else [])


def input_names(postprocess: bool) -> list:
    return ["images", "mask"] + (["target_sizes"] if postprocess else [])


def check_model(model) -> None:
    """Raise ExportError for what cannot be exported (or would be exported wrongly)."""
    try:
        check_inference_model(model, "export", "reduced precision is the runtime's choice (e.g. TensorRT's --fp16)")
    except (TypeError, ValueError) as e:
        # optimize_for_inference's result holds the model it was made from
        made_from = isinstance(getattr(model, "model", None), DeformableDETR)
        hint = " (export the model it was made from: OptimizedDETR.model)" if made_from else ""
        raise ExportError(f"{e}{hint}") from None
    for name, m in model.named_modules():
        if isinstance(m, MSDeformAttn) and m.use_reference:
            raise ExportError(
                f"{name}.use_reference is set: the pure-PyTorch reference reads the "
                "spatial shapes' values and cannot be exported; unset it to export the op"
            )


def _level_strides(model: DeformableDETR) -> list:
    strides = list(model.backbone.strides)
    while len(strides) < model.num_feature_levels:
        strides.append(strides[-1] * 2)  # the extra 3x3 stride-2 levels
    return strides


def positions(model: DeformableDETR, h: int, w: int) -> int:
    """Encoder positions (sum of H_l * W_l) for an h x w image: every stride-2 stage (ResNet
    stem, max pool, layers; the extra levels' convolutions) gives ceil(size / 2)."""
    return sum(-(-h // s) * -(-w // s) for s in _level_strides(model))


def size_limits(model: DeformableDETR) -> tuple:
    """(min, max) image side the exported graph accepts: the coarsest level at least 2 cells
    across (a 1-cell level specialises broadcasting in the trace), for two-stage enough
    encoder positions for the num_queries proposals; at most MAX_SIDE, and for the learned
    position embedding at most its 50 cells on the finest level."""
    strides = _level_strides(model)
    low = max(strides) + 1
    if model.two_stage:
        while positions(model, low, low) < model.transformer.two_stage_num_proposals:
            low += 1
    high = LEARNED_CELLS * min(strides) if isinstance(model.backbone[1], PositionEmbeddingLearned) else MAX_SIDE
    return low, high


def check_side_limit(image_size) -> tuple:
    """(h, w) of `image_size` (an int or (h, w)), refused above MAX_SIDE: needs no model."""
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if max(h, w) > MAX_SIDE:
        raise ExportError(f"image size {h}x{w} is above {MAX_SIDE}, the largest side an exported graph takes")
    return h, w


def check_image_size(model: DeformableDETR, image_size) -> tuple:
    h, w = check_side_limit(image_size)
    low, high = size_limits(model)
    if min(h, w) < low:
        why = (
            f"two-stage needs {model.transformer.two_stage_num_proposals} encoder positions (num_queries)"
            if model.two_stage
            else f"the coarsest feature level, stride {low - 1}, needs 2 cells"
        )
        raise ExportError(f"image size {h}x{w} is below this model's minimum side {low} ({why})")
    if max(h, w) > high:
        raise ExportError(
            f"image size {h}x{w} is above {high}, the largest the learned position "
            "embedding covers (50 cells at the finest level)"
        )
    return h, w


def example_inputs(model: DeformableDETR, h: int, w: int, postprocess: bool, batch: int = 2) -> tuple:
    device = next(model.parameters()).device
    images = torch.randn(batch, 3, h, w, generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.zeros(batch, h, w, dtype=torch.bool, device=device)
    if not postprocess:
        return images, mask
    return images, mask, torch.tensor([[h, w]] * batch, dtype=torch.float32, device=device)


def dynamic_shapes(model: DeformableDETR, postprocess: bool) -> tuple:
    """Batch, height and width all dynamic, within size_limits."""
    from torch.export import Dim

    low, high = size_limits(model)
    batch = Dim("batch", min=1, max=1024)
    height = Dim("height", min=low, max=high)
    width = Dim("width", min=low, max=high)
    shapes = ({0: batch, 2: height, 3: width}, {0: batch, 1: height, 2: width})
    return shapes + ({0: batch},) if postprocess else shapes


def export_program(
    model: DeformableDETR,
    image_size=800,
    dynamic: bool = True,
    postprocess: bool = False,
    num_select: int = DEFAULTS["num_select"],
) -> torch.export.ExportedProgram:
    """torch.export.export of DetectorGraph(model): inputs (images, mask[, target_sizes]),
    outputs as DetectorGraph says. With `dynamic`, batch, height and width are symbolic
    (image_size only sets the example); otherwise fixed to batch 1 and image_size."""
    check_model(model)
    h, w = check_image_size(model, image_size)
    graph = DetectorGraph(model, postprocess, num_select).eval()
    # a batch of 2 as the example keeps the batch symbolic (export specialises sizes 0 and 1)
    args = example_inputs(model, h, w, postprocess, batch=2 if dynamic else 1)
    try:
        with torch.no_grad():
            return torch.export.export(
                graph, args, dynamic_shapes=dynamic_shapes(model, postprocess) if dynamic else None
            )
    except Exception as e:
        raise ExportError(f"torch.export failed for this model ({_describe(model)}): {e}") from e


def _describe(model: DeformableDETR) -> str:
    return f"{model.num_feature_levels} levels, with_box_refine={model.with_box_refine}, two_stage={model.two_stage}"
