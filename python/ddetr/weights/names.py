"""The name rules between the official layout and transformers' (HF) layout: one table,
read in both directions. A rule pairs an official template with an HF template; `{x}` is a
field both sides share, `{x+1}` the same field counted from 1 (torchvision's `layer1` is HF
ResNet's `stages.0`). HF names are those that hub files carry (transformers 4.x, and what
5.x writes with save_pretrained); 5.x's in-memory names map onto them by HF_V5."""

from __future__ import annotations

import re
from dataclasses import dataclass

# what each field may match: indices are digits, `rest` anything, other fields one name part
_INDICES = {"i", "b", "j", "s"}
_FIELD_RE = {"rest": r".+", "qkv": r"q|k|v"}
_FIELD = re.compile(r"\{(\w+)(\+1)?\}")


@dataclass(frozen=True)
class Rule:
    official: str
    hf: str
    split: tuple = ()  # HF holds this official tensor as len(split) chunks along dim 0

    def side(self, name: str) -> str:
        return self.official if name == "official" else self.hf


def _regex(template: str) -> re.Pattern:
    out, pos = [], 0
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name = m.group(1)
        pattern = r"\d+" if m.group(2) or name in _INDICES else _FIELD_RE.get(name, r"[^.]+")
        out.append(f"(?P<{name}>{pattern})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


_COMPILED: dict[str, re.Pattern] = {}


def parse(template: str, key: str) -> dict | None:
    """The field values of `key` under `template` (offset fields counted from 0), or None."""
    rx = _COMPILED.get(template) or _COMPILED.setdefault(template, _regex(template))
    m = rx.fullmatch(key)
    if m is None:
        return None
    values = m.groupdict()
    for f in _FIELD.finditer(template):
        if f.group(2):
            values[f.group(1)] = str(int(values[f.group(1)]) - 1)
    return values


def format_name(template: str, values: dict) -> str:
    def field(m):
        v = values[m.group(1)]
        return str(int(v) + 1) if m.group(2) else v

    return _FIELD.sub(field, template)


def find(rules, side: str, key: str):
    """(rule, field values) of the first rule whose `side` template matches `key`."""
    for rule in rules:
        values = parse(rule.side(side), key)
        if values is not None:
            return rule, values
    return None, None


_ENC, _DEC = "transformer.encoder.layers.{i}", "transformer.decoder.layers.{i}"
_HENC, _HDEC = "model.encoder.layers.{i}", "model.decoder.layers.{i}"

TRANSFORMER = (
    Rule("transformer.level_embed", "model.level_embed"),
    Rule("input_proj.{rest}", "model.input_proj.{rest}"),
    Rule("query_embed.weight", "model.query_position_embeddings.weight"),
    Rule("transformer.reference_points.{p}", "model.reference_points.{p}"),
    # two-stage: encoder proposals
    Rule("transformer.enc_output.{p}", "model.enc_output.{p}"),
    Rule("transformer.enc_output_norm.{p}", "model.enc_output_norm.{p}"),
    Rule("transformer.pos_trans.{p}", "model.pos_trans.{p}"),
    Rule("transformer.pos_trans_norm.{p}", "model.pos_trans_norm.{p}"),
    Rule(f"{_ENC}.self_attn.{{rest}}", f"{_HENC}.self_attn.{{rest}}"),
    Rule(f"{_ENC}.norm1.{{p}}", f"{_HENC}.self_attn_layer_norm.{{p}}"),
    Rule(f"{_ENC}.linear{{j}}.{{p}}", f"{_HENC}.fc{{j}}.{{p}}"),
    Rule(f"{_ENC}.norm2.{{p}}", f"{_HENC}.final_layer_norm.{{p}}"),
    # decoder: the order of the norms follows the official code (self-attn -> norm2)
    Rule(f"{_DEC}.cross_attn.{{rest}}", f"{_HDEC}.encoder_attn.{{rest}}"),
    Rule(f"{_DEC}.norm1.{{p}}", f"{_HDEC}.encoder_attn_layer_norm.{{p}}"),
    # nn.MultiheadAttention packs q, k, v in one matrix; HF keeps three Linear layers
    Rule(f"{_DEC}.self_attn.in_proj_{{t}}", f"{_HDEC}.self_attn.{{qkv}}_proj.{{t}}", ("q", "k", "v")),
    Rule(f"{_DEC}.self_attn.out_proj.{{p}}", f"{_HDEC}.self_attn.out_proj.{{p}}"),
    Rule(f"{_DEC}.norm2.{{p}}", f"{_HDEC}.self_attn_layer_norm.{{p}}"),
    Rule(f"{_DEC}.linear{{j}}.{{p}}", f"{_HDEC}.fc{{j}}.{{p}}"),
    Rule(f"{_DEC}.norm3.{{p}}", f"{_HDEC}.final_layer_norm.{{p}}"),
    # heads: the decoder's references to them (box refinement, two-stage) have their own names
    Rule("transformer.decoder.bbox_embed.{rest}", "model.decoder.bbox_embed.{rest}"),
    Rule("transformer.decoder.class_embed.{rest}", "model.decoder.class_embed.{rest}"),
    Rule("class_embed.{rest}", "class_embed.{rest}"),
    Rule("bbox_embed.{rest}", "bbox_embed.{rest}"),
)

_BODY, _HB = "backbone.0.body", "model.backbone.conv_encoder.model"
_BLOCK, _HBLOCK = f"{_BODY}.layer{{s+1}}.{{b}}", f"{_HB}.encoder.stages.{{s}}.layers.{{b}}"

# The ResNet under each backbone route. timm's ResNet has torchvision's names (hub files);
# transformers' own ResNet (use_timm_backbone=False) names the same tensors its own way.
BACKBONES = {
    "timm": (Rule(f"{_BODY}.{{rest}}", f"{_HB}.{{rest}}"),),
    "transformers": (
        Rule(f"{_BODY}.conv1.weight", f"{_HB}.embedder.embedder.convolution.weight"),
        Rule(f"{_BODY}.bn1.{{p}}", f"{_HB}.embedder.embedder.normalization.{{p}}"),
        Rule(f"{_BLOCK}.conv{{j+1}}.weight", f"{_HBLOCK}.layer.{{j}}.convolution.weight"),
        Rule(f"{_BLOCK}.bn{{j+1}}.{{p}}", f"{_HBLOCK}.layer.{{j}}.normalization.{{p}}"),
        Rule(f"{_BLOCK}.downsample.0.weight", f"{_HBLOCK}.shortcut.convolution.weight"),
        Rule(f"{_BLOCK}.downsample.1.{{p}}", f"{_HBLOCK}.shortcut.normalization.{{p}}"),
    ),
}

# transformers 5.x renames in memory (its conversion mapping for deformable_detr); here as
# Rule(hub name, 5.x name), so a state_dict() saved from a 5.x model reads too.
HF_V5 = (
    Rule("model.backbone.conv_encoder.model.{rest}", "model.backbone.model.{rest}"),
    Rule("model.{part}.layers.{i}.fc{j}.{p}", "model.{part}.layers.{i}.mlp.fc{j}.{p}"),
    Rule("model.decoder.layers.{i}.self_attn.out_proj.{p}", "model.decoder.layers.{i}.self_attn.o_proj.{p}"),
)


def hub_name(key: str) -> str:
    """A transformers 5.x in-memory name as hub files carry it; other names unchanged."""
    rule, values = find(HF_V5, "hf", key)
    return key if rule is None else format_name(rule.official, values)
