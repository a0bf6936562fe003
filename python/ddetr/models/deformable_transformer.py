"""The deformable transformer: an encoder of deformable self-attention over the flattened
multi-scale features, and a decoder of query self-attention plus deformable cross-attention,
optionally refining each query's reference box layer by layer, optionally seeded by encoder
proposals (two-stage). Every deformable attention is ddetr.nn.MSDeformAttn (the compiled op)."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn import MSDeformAttn
from ..ops import compute_level_start_index
from ..util.misc import inverse_sigmoid


def _shape_list(spatial_shapes) -> list:
    """(H, W) per level as Python ints: from the (L, 2) tensor, or as given. Callers pass the
    list taken from the feature maps' shapes, so torch.compile traces without reading the
    tensor's data (`.tolist()` breaks the graph and fixes the sizes)."""
    if isinstance(spatial_shapes, torch.Tensor):
        return [tuple(hw) for hw in spatial_shapes.tolist()]
    return list(spatial_shapes)


def _clones(module: nn.Module, n: int) -> nn.ModuleList:
    return nn.ModuleList([copy.deepcopy(module) for _ in range(n)])


def refine_boxes(reference: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """A box head's prediction applied to reference points, in logit space: a 4-d reference
    (cx, cy, w, h) moves by all of `delta`; a 2-d one (cx, cy) by its first two entries,
    the last two being the size. Returns normalised (cx, cy, w, h)."""
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    return torch.cat([delta[..., :2] + inverse_sigmoid(reference), delta[..., 2:]], -1).sigmoid()


def _ffn(layer, x, norm):
    # The post-norm feed-forward block; its parameters live on the layer itself because
    # official checkpoints name them `linear1`, `linear2` there.
    return norm(x + layer.dropout_ffn2(layer.linear2(layer.dropout_ffn1(F.relu(layer.linear1(x))))))


class DeformableEncoderLayer(nn.Module):
    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout_ffn1 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout_ffn2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src, pos, reference_points, spatial_shapes, level_start_index, padding_mask=None):
        attn = self.self_attn(src + pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        src = self.norm1(src + self.dropout1(attn))
        return _ffn(self, src, self.norm2)


class DeformableEncoder(nn.Module):
    def __init__(self, layer: DeformableEncoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers

    @staticmethod
    def get_reference_points(spatial_shapes, valid_ratios, device):
        """Pixel centres of every level, (N, S, L, 2) normalised: each centre is expressed
        relative to its own image's valid area, then mapped into every level's valid area.
        `spatial_shapes`: the (L, 2) tensor or a list of (H, W)."""
        refs = []
        for lvl, (h, w) in enumerate(_shape_list(spatial_shapes)):
            # arange + 0.5 is exactly the official linspace(0.5, h - 0.5, h), and unlike
            # linspace it keeps h symbolic under torch.compile (no recompile per size)
            ref_y, ref_x = torch.meshgrid(
                torch.arange(h, dtype=torch.float32, device=device) + 0.5,
                torch.arange(w, dtype=torch.float32, device=device) + 0.5,
                indexing="ij",
            )
            ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
            ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
            refs.append(torch.stack((ref_x, ref_y), -1))
        return torch.cat(refs, 1)[:, :, None] * valid_ratios[:, None]

    def forward(self, src, spatial_shapes, level_start_index, valid_ratios, pos, padding_mask=None, shapes=None):
        """`shapes`: optional list of (H, W) per level, the same as `spatial_shapes` (the
        tensor the op reads), given to avoid reading that tensor back."""
        reference_points = self.get_reference_points(
            spatial_shapes if shapes is None else shapes, valid_ratios, src.device
        )
        for layer in self.layers:
            src = layer(src, pos, reference_points, spatial_shapes, level_start_index, padding_mask)
        return src


class DeformableDecoderLayer(nn.Module):
    def __init__(self, d_model=256, d_ffn=1024, dropout=0.1, n_levels=4, n_heads=8, n_points=4):
        super().__init__()
        self.cross_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.dropout1 = nn.Dropout(dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.self_attn = nn.MultiheadAttention(d_model, n_heads, dropout=dropout, batch_first=True)
        self.dropout2 = nn.Dropout(dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.dropout_ffn1 = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.dropout_ffn2 = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt, query_pos, reference_points, src, spatial_shapes, level_start_index, padding_mask=None):
        q = k = tgt + query_pos
        tgt = self.norm2(tgt + self.dropout2(self.self_attn(q, k, tgt, need_weights=False)[0]))
        attn = self.cross_attn(tgt + query_pos, reference_points, src, spatial_shapes, level_start_index, padding_mask)
        tgt = self.norm1(tgt + self.dropout1(attn))
        return _ffn(self, tgt, self.norm3)


class DeformableDecoder(nn.Module):
    """Returns every layer's output (num_layers, N, Q, C), the reference points each layer
    produced, and with `bbox_embed` set (box refinement, by DeformableDETR) each layer's
    boxes (num_layers, N, Q, 4), else None. With refinement each layer's box head moves the
    references; the next layer gets them detached, as in the paper, while the boxes keep
    their gradient for the loss."""

    def __init__(self, layer: DeformableDecoderLayer, num_layers: int):
        super().__init__()
        self.layers = _clones(layer, num_layers)
        self.num_layers = num_layers
        self.bbox_embed = None
        self.class_embed = None

    def forward(
        self, tgt, reference_points, src, spatial_shapes, level_start_index, valid_ratios, query_pos, padding_mask=None
    ):
        output, intermediate, intermediate_refs, boxes = tgt, [], [], []
        for lid, layer in enumerate(self.layers):
            if reference_points.shape[-1] == 4:
                ref_input = reference_points[:, :, None] * torch.cat([valid_ratios, valid_ratios], -1)[:, None]
            else:
                ref_input = reference_points[:, :, None] * valid_ratios[:, None]
            output = layer(output, query_pos, ref_input, src, spatial_shapes, level_start_index, padding_mask)
            if self.bbox_embed is not None:
                boxes.append(refine_boxes(reference_points, self.bbox_embed[lid](output)))
                reference_points = boxes[-1].detach()
            intermediate.append(output)
            intermediate_refs.append(reference_points)
        return torch.stack(intermediate), torch.stack(intermediate_refs), torch.stack(boxes) if boxes else None


class DeformableTransformer(nn.Module):
    def __init__(
        self,
        d_model=256,
        nhead=8,
        num_encoder_layers=6,
        num_decoder_layers=6,
        dim_feedforward=1024,
        dropout=0.1,
        num_feature_levels=4,
        dec_n_points=4,
        enc_n_points=4,
        two_stage=False,
        two_stage_num_proposals=300,
    ):
        super().__init__()
        self.d_model, self.nhead = d_model, nhead
        self.two_stage, self.two_stage_num_proposals = two_stage, two_stage_num_proposals
        self.encoder = DeformableEncoder(
            DeformableEncoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, enc_n_points),
            num_encoder_layers,
        )
        self.decoder = DeformableDecoder(
            DeformableDecoderLayer(d_model, dim_feedforward, dropout, num_feature_levels, nhead, dec_n_points),
            num_decoder_layers,
        )
        self.level_embed = nn.Parameter(torch.empty(num_feature_levels, d_model))
        if two_stage:
            self.enc_output = nn.Linear(d_model, d_model)
            self.enc_output_norm = nn.LayerNorm(d_model)
            self.pos_trans = nn.Linear(d_model * 2, d_model * 2)
            self.pos_trans_norm = nn.LayerNorm(d_model * 2)
        else:
            self.reference_points = nn.Linear(d_model, 2)
        self._reset_parameters()

    def _reset_parameters(self):
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for m in self.modules():  # undo the blanket xavier on the attention's special init
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        if not self.two_stage:
            nn.init.xavier_uniform_(self.reference_points.weight, gain=1.0)
            nn.init.constant_(self.reference_points.bias, 0.0)
        nn.init.normal_(self.level_embed)

    @staticmethod
    def get_valid_ratio(mask):
        """Fraction (w, h) of each feature map covered by the image rather than padding."""
        _, h, w = mask.shape
        valid_h = (~mask[:, :, 0]).sum(1)
        valid_w = (~mask[:, 0, :]).sum(1)
        return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)

    def get_proposal_pos_embed(self, proposals):
        """Sine embedding of (N, K, 4) unnormalised boxes -> (N, K, 2 * d_model)."""
        num_pos_feats, temperature, scale = self.d_model // 2, 10000, 2 * math.pi
        dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=proposals.device)
        dim_t = temperature ** (2 * (dim_t // 2) / num_pos_feats)
        pos = proposals.sigmoid()[..., None] * scale / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), 4).flatten(2)

    def gen_encoder_output_proposals(self, memory, padding_mask, spatial_shapes):
        """One proposal per encoder pixel: a box at the pixel centre of size 0.05 * 2^level,
        as logits; padding and proposals near the border are disabled (inf / zero memory)."""
        n = memory.shape[0]
        proposals, cur = [], 0
        for lvl, (h, w) in enumerate(_shape_list(spatial_shapes)):
            mask = padding_mask[:, cur : cur + h * w].view(n, h, w)
            valid_h, valid_w = (~mask[:, :, 0]).sum(1), (~mask[:, 0, :]).sum(1)
            gy, gx = torch.meshgrid(  # = linspace(0, h - 1, h), see get_reference_points
                torch.arange(h, dtype=torch.float32, device=memory.device),
                torch.arange(w, dtype=torch.float32, device=memory.device),
                indexing="ij",
            )
            grid = torch.stack([gx, gy], -1)
            scale = torch.stack([valid_w, valid_h], 1).view(n, 1, 1, 2)
            grid = (grid[None].expand(n, -1, -1, -1) + 0.5) / scale
            wh = torch.ones_like(grid) * 0.05 * (2.0**lvl)
            proposals.append(torch.cat((grid, wh), -1).view(n, -1, 4))
            cur += h * w
        proposals = torch.cat(proposals, 1)
        valid = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals))
        proposals = proposals.masked_fill(padding_mask[..., None], float("inf"))
        proposals = proposals.masked_fill(~valid, float("inf"))
        out = memory.masked_fill(padding_mask[..., None], 0.0).masked_fill(~valid, 0.0)
        return self.enc_output_norm(self.enc_output(out)), proposals

    def forward(self, srcs, masks, pos_embeds, query_embed=None):
        """srcs, masks, pos_embeds: per level (N, C, H, W), (N, H, W), (N, C, H, W).
        Returns decoder outputs (layers, N, Q, C), initial references, per-layer references,
        per-layer refined boxes (None without box refinement) and, for two-stage, the
        encoder's class logits and unnormalised proposal boxes."""
        shapes = [tuple(s.shape[-2:]) for s in srcs]
        # torch.tensor (not as_tensor) keeps symbolic sizes symbolic under torch.compile's
        # dynamic shapes; as_tensor fixes them, so every image size would recompile.
        spatial_shapes = torch.tensor(shapes, dtype=torch.long, device=srcs[0].device)
        src_flatten = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        mask_flatten = torch.cat([m.flatten(1) for m in masks], 1)
        pos_flatten = torch.cat(
            [p.flatten(2).transpose(1, 2) + self.level_embed[lvl].view(1, 1, -1) for lvl, p in enumerate(pos_embeds)], 1
        )
        level_start_index = compute_level_start_index(spatial_shapes)
        valid_ratios = torch.stack([self.get_valid_ratio(m) for m in masks], 1)

        memory = self.encoder(
            src_flatten, spatial_shapes, level_start_index, valid_ratios, pos_flatten, mask_flatten, shapes
        )
        n, s, c = memory.shape
        enc_class = enc_coord_unact = None
        if self.two_stage:
            if s < self.two_stage_num_proposals:
                raise ValueError(
                    f"two-stage selects {self.two_stage_num_proposals} proposals (num_queries) "
                    f"but the encoder has only {s} positions: use larger images or fewer queries"
                )
            output_memory, output_proposals = self.gen_encoder_output_proposals(memory, mask_flatten, shapes)
            enc_class = self.decoder.class_embed[self.decoder.num_layers](output_memory)
            enc_coord_unact = self.decoder.bbox_embed[self.decoder.num_layers](output_memory) + output_proposals
            topk = torch.topk(enc_class[..., 0], self.two_stage_num_proposals, dim=1)[1]
            topk_coords = torch.gather(enc_coord_unact, 1, topk[..., None].expand(-1, -1, 4)).detach()
            reference_points = topk_coords.sigmoid()
            pos_trans = self.pos_trans_norm(self.pos_trans(self.get_proposal_pos_embed(topk_coords)))
            query_pos, tgt = torch.split(pos_trans, c, dim=2)
        else:
            query_pos, tgt = torch.split(query_embed, c, dim=1)
            query_pos = query_pos[None].expand(n, -1, -1)
            tgt = tgt[None].expand(n, -1, -1)
            reference_points = self.reference_points(query_pos).sigmoid()
        init_reference = reference_points
        hs, inter_references, boxes = self.decoder(
            tgt, reference_points, memory, spatial_shapes, level_start_index, valid_ratios, query_pos, mask_flatten
        )
        return hs, init_reference, inter_references, boxes, enc_class, enc_coord_unact
