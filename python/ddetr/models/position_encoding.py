"""Position embeddings of a feature map, from its padding mask: the sine embedding of the
paper (normalised to the valid image, so padding does not shift positions) or a learned one."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..util.misc import NestedTensor


class PositionEmbeddingSine(nn.Module):
    """(B, 2*num_pos_feats, H, W): cat(pos_y, pos_x), each interleaving sin and cos of the
    pixel's coordinate at geometric frequencies. Coordinates count valid pixels only."""

    def __init__(
        self, num_pos_feats: int = 128, temperature: int = 10000, normalize: bool = True, scale: float | None = None
    ):
        super().__init__()
        if scale is not None and not normalize:
            raise ValueError("normalize should be True if scale is passed")
        self.num_pos_feats, self.temperature, self.normalize = num_pos_feats, temperature, normalize
        self.scale = 2 * math.pi if scale is None else scale

    def forward(self, tensor_list: NestedTensor) -> torch.Tensor:
        not_mask = ~tensor_list.mask
        y = not_mask.cumsum(1, dtype=torch.float32)
        x = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            # pixel centres (-0.5) over the valid extent, mapped to [0, scale)
            eps = 1e-6
            y = (y - 0.5) / (y[:, -1:, :] + eps) * self.scale
            x = (x - 0.5) / (x[:, :, -1:] + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=torch.float32, device=not_mask.device)
        dim_t = self.temperature ** (2 * (dim_t // 2) / self.num_pos_feats)
        pos_x, pos_y = x[..., None] / dim_t, y[..., None] / dim_t
        pos_x = torch.stack((pos_x[..., 0::2].sin(), pos_x[..., 1::2].cos()), 4).flatten(3)
        pos_y = torch.stack((pos_y[..., 0::2].sin(), pos_y[..., 1::2].cos()), 4).flatten(3)
        return torch.cat((pos_y, pos_x), 3).permute(0, 3, 1, 2)


LEARNED_CELLS = 50  # the learned embedding's rows and columns: the largest feature map it covers


class PositionEmbeddingLearned(nn.Module):
    """Learned absolute embedding for maps up to 50 x 50 (`--position_embedding learned`)."""

    def __init__(self, num_pos_feats: int = 256):
        super().__init__()
        self.row_embed = nn.Embedding(LEARNED_CELLS, num_pos_feats)
        self.col_embed = nn.Embedding(LEARNED_CELLS, num_pos_feats)
        nn.init.uniform_(self.row_embed.weight)
        nn.init.uniform_(self.col_embed.weight)

    def forward(self, tensor_list: NestedTensor) -> torch.Tensor:
        x = tensor_list.tensors
        h, w = x.shape[-2:]
        if h > LEARNED_CELLS or w > LEARNED_CELLS:
            n = LEARNED_CELLS
            raise ValueError(f"learned position embedding supports maps up to {n}x{n}, got {h}x{w}")
        i = torch.arange(w, device=x.device)
        j = torch.arange(h, device=x.device)
        x_emb, y_emb = self.col_embed(i), self.row_embed(j)
        pos = torch.cat([x_emb[None].expand(h, -1, -1), y_emb[:, None].expand(-1, w, -1)], -1)
        return pos.permute(2, 0, 1)[None].expand(x.shape[0], -1, -1, -1)


def build_position_encoding(
    position_embedding: str = "sine", hidden_dim: int = 256, position_embedding_scale: float = 2 * math.pi
) -> nn.Module:
    n_steps = hidden_dim // 2
    if position_embedding in ("v2", "sine"):
        return PositionEmbeddingSine(n_steps, normalize=True, scale=position_embedding_scale)
    if position_embedding in ("v3", "learned"):
        return PositionEmbeddingLearned(n_steps)
    raise ValueError(f"position_embedding must be 'sine' or 'learned', got {position_embedding!r}")
