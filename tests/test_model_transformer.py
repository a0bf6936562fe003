"""Deformable transformer internals against hand-computed values: valid ratios, encoder
reference points, two-stage proposals and their position embedding, decoder references."""

import math

import torch

from ddetr.models.deformable_transformer import DeformableEncoder, DeformableTransformer
from ddetr.util.misc import inverse_sigmoid


def _transformer(**kw):
    torch.manual_seed(0)
    return DeformableTransformer(
        d_model=64,
        nhead=4,
        num_encoder_layers=1,
        num_decoder_layers=2,
        dim_feedforward=64,
        dropout=0.0,
        num_feature_levels=2,
        **kw,
    )


def test_valid_ratio():
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0, :4, :5] = False
    mask[1, :2, :3] = False
    vr = DeformableTransformer.get_valid_ratio(mask)
    assert torch.allclose(vr, torch.tensor([[1.0, 1.0], [3 / 5, 2 / 4]]))  # (w, h)


def test_encoder_reference_points_hand_values():
    shapes = torch.tensor([[2, 2], [1, 1]])
    # image covering all of level 0 and all of level 1
    full = DeformableEncoder.get_reference_points(shapes, torch.ones(1, 2, 2), "cpu")
    assert full.shape == (1, 5, 2, 2)
    centres = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75], [0.5, 0.5]])
    assert torch.allclose(full[0, :, 0], centres) and torch.allclose(full[0, :, 1], centres)
    # an image valid on the top row only of level 0 (ratio h 0.5) and all of level 1 (ratio 1):
    # a point is normalised by its own level's valid area, then mapped into every level's
    vr = torch.tensor([[[1.0, 0.5], [1.0, 1.0]]])
    ref = DeformableEncoder.get_reference_points(shapes, vr, "cpu")
    # level-0 pixel (row 0, col 1): in-image (0.75, 0.5) -> level 0 (0.75, 0.25), level 1 (0.75, 0.5)
    assert torch.allclose(ref[0, 1], torch.tensor([[0.75, 0.25], [0.75, 0.5]]))
    # level-1 pixel: in-image (0.5, 0.5) -> level 0 (0.5, 0.25)
    assert torch.allclose(ref[0, 4], torch.tensor([[0.5, 0.25], [0.5, 0.5]]))


def test_encoder_output_proposals_hand_values():
    t = _transformer(two_stage=True)
    shapes = torch.tensor([[4, 4], [2, 2]])
    mask = torch.zeros(1, 20, dtype=torch.bool)
    mask[0, 3] = True  # one padded pixel at level 0, row 0, col 3
    memory = torch.randn(1, 20, 64)
    out_memory, proposals = t.gen_encoder_output_proposals(memory, mask, shapes)
    assert out_memory.shape == (1, 20, 64) and proposals.shape == (1, 20, 4)
    # level 0 valid width: 3 columns in row 0 (the column count is read from row 0)
    expected = torch.tensor([0.5 / 3, 0.5 / 4, 0.05, 0.05])
    assert torch.allclose(proposals[0, 0], inverse_sigmoid(expected), atol=1e-5)
    assert torch.isinf(proposals[0, 3]).all()  # padding
    lvl1 = torch.tensor([0.25, 0.25, 0.1, 0.1])
    assert torch.allclose(proposals[0, 16], torch.log(lvl1 / (1 - lvl1)), atol=1e-5)
    # padded positions have their memory zeroed before the projection
    assert torch.allclose(out_memory[0, 3], t.enc_output_norm(t.enc_output(torch.zeros(64))), atol=1e-5)


def test_proposal_pos_embed_values():
    t = _transformer(two_stage=True)
    boxes = torch.tensor([[[0.0, 1.0, -1.0, 2.0]]])
    pos = t.get_proposal_pos_embed(boxes)
    assert pos.shape == (1, 1, 4 * 32)
    s = boxes.sigmoid()[0, 0] * 2 * math.pi
    # per coordinate: 32 features, interleaved sin/cos with frequencies 10000^(2*(k//2)/32)
    assert torch.allclose(pos[0, 0, [0, 32, 64, 96]], s.sin())
    assert torch.allclose(pos[0, 0, [1, 33, 65, 97]], s.cos())
    assert torch.allclose(pos[0, 0, 2], (s[0] / 10000 ** (2 / 32)).sin())


def test_decoder_without_refinement_keeps_references():
    t = _transformer().eval()
    srcs = [torch.randn(2, 64, 4, 5), torch.randn(2, 64, 2, 3)]
    masks = [torch.zeros(2, 4, 5, dtype=torch.bool), torch.zeros(2, 2, 3, dtype=torch.bool)]
    pos = [torch.randn_like(s) for s in srcs]
    query = torch.randn(7, 128)
    with torch.no_grad():
        hs, init_ref, inter_refs, boxes, enc_class, enc_coord = t(srcs, masks, pos, query)
    assert hs.shape == (2, 2, 7, 64) and init_ref.shape == (2, 7, 2) and inter_refs.shape == (2, 2, 7, 2)
    assert boxes is None and enc_class is None and enc_coord is None
    assert torch.equal(inter_refs[0], init_ref) and torch.equal(inter_refs[1], init_ref)
    assert torch.allclose(init_ref, t.reference_points(query[:, :64]).sigmoid()[None].expand(2, -1, -1))


def test_two_stage_selects_top_scoring_proposals():
    from ddetr.models.deformable_detr import MLP

    t = _transformer(two_stage=True, two_stage_num_proposals=5).eval()
    heads = torch.nn.ModuleList([torch.nn.Linear(64, 3) for _ in range(3)])
    boxes = torch.nn.ModuleList([MLP(64, 64, 4, 3) for _ in range(3)])
    t.decoder.class_embed, t.decoder.bbox_embed = heads, boxes
    srcs = [torch.randn(1, 64, 4, 5), torch.randn(1, 64, 2, 3)]
    masks = [torch.zeros(1, 4, 5, dtype=torch.bool), torch.zeros(1, 2, 3, dtype=torch.bool)]
    with torch.no_grad():
        hs, init_ref, inter_refs, boxes, enc_class, enc_coord = t(srcs, masks, [torch.zeros_like(s) for s in srcs])
    assert enc_class.shape == (1, 26, 3) and enc_coord.shape == (1, 26, 4)
    top = enc_class[0, :, 0].topk(5).indices
    assert torch.allclose(init_ref[0], enc_coord[0, top].sigmoid())
    assert hs.shape == (2, 1, 5, 64) and inter_refs.shape == (2, 1, 5, 4)
