"""transformers' DeformableDetrConfig (config.json) <-> ddetr model options: one table of
fields, read in both directions (as weights/names.py does for tensor names), holding each
field's JSON type (its range is its option's, models.config.CHECKS), so that a config.json
is checked field by field before use.

Two backbone routes: 'transformers' writes `use_timm_backbone: false` and a ResNet
`backbone_config`, which transformers builds with its own ResNet (no timm needed);
'timm' writes what hub configs carry (`use_timm_backbone: true`, `backbone: resnet50`),
which needs timm (and so torchvision) wherever it is loaded."""

from __future__ import annotations

from dataclasses import dataclass

from ..models.config import CHECKS, EXPANSION, RESNETS
from .errors import WeightsError

_STAGES = ("stage2", "stage3", "stage4")  # C3..C5, as ddetr's Backbone returns them

# config.json's entry for a ddetr run's category ids (label -> id): transformers keeps
# unknown config entries, and ddetr reads it back
CATEGORIES_KEY = "ddetr_label_to_category"


@dataclass(frozen=True)
class Field:
    key: str  # config.json's name
    option: str | None  # the ddetr option it carries; None: a fixed `value`
    kind: type  # its JSON type: int, bool or str
    default: object = None  # written when the options do not say
    value: object = None  # fixed fields: what ddetr writes, and the only value it reads
    two_stage: bool | None = None  # read only for (or not for) two-stage models

    def check(self, v, where: str) -> None:
        """WeightsError naming the field unless `v` has its JSON type and its option's range."""
        ok, expected = CHECKS.get(self.option, (lambda v: True, ""))
        if self.value is not None:
            ok, expected = (lambda v: v == self.value), repr(self.value)
        if not isinstance(v, self.kind) or (self.kind is not bool and isinstance(v, bool)):
            ok, expected = (lambda v: False), {int: "an integer", bool: "true or false", str: "a string"}[self.kind]
        if not ok(v):
            raise WeightsError(f"{where}: config.json field {self.key!r} is {v!r}: expected {expected}")


FIELDS = (
    Field("model_type", None, str, value="deformable_detr"),
    Field("activation_function", None, str, value="relu"),
    Field("d_model", "hidden_dim", int),
    Field("encoder_layers", "enc_layers", int),
    Field("decoder_layers", "dec_layers", int),
    Field("encoder_ffn_dim", "dim_feedforward", int),
    Field("decoder_ffn_dim", "dim_feedforward", int),  # ddetr: one value for both
    Field("encoder_attention_heads", "nheads", int),
    Field("decoder_attention_heads", "nheads", int),
    Field("encoder_n_points", "enc_n_points", int),
    Field("decoder_n_points", "dec_n_points", int),
    Field("num_feature_levels", "num_feature_levels", int),
    Field("with_box_refine", "with_box_refine", bool),
    Field("two_stage", "two_stage", bool),
    Field("num_queries", "num_queries", int, default=300, two_stage=False),
    Field("two_stage_num_proposals", "num_queries", int, default=300, two_stage=True),
    Field("position_embedding_type", "position_embedding", str, default="sine"),
    Field("dilation", "dilation", bool, default=False),
)
BY_KEY = {f.key: f for f in FIELDS}
_WRITTEN_ONLY = dict(
    architectures=["DeformableDetrForObjectDetection"], auxiliary_loss=False, use_pretrained_backbone=False
)


def to_config(opts: dict, route: str, id2label: dict | None = None) -> dict:
    config = dict(_WRITTEN_ONLY)
    for f in FIELDS:
        if f.option is None:
            config[f.key] = f.value
        else:
            config[f.key] = opts[f.option] if f.default is None else opts.get(f.option, f.default)
    levels = opts["num_feature_levels"]
    config["id2label"] = {str(i): (id2label or {}).get(i, f"LABEL_{i}") for i in range(opts["num_classes"])}
    block, depths = RESNETS[opts["backbone"]]
    if route == "timm":
        config.update(use_timm_backbone=True, backbone=opts["backbone"], backbone_config=None)
    elif route == "transformers":
        if opts.get("dilation"):
            raise WeightsError("transformers' own ResNet has no dilation (DC5): convert with backbone='timm'")
        config.update(
            use_timm_backbone=False,
            backbone=None,
            backbone_config=dict(
                model_type="resnet",
                layer_type=block,
                depths=list(depths),
                hidden_sizes=[c * EXPANSION[block] for c in (64, 128, 256, 512)],
                embedding_size=64,
                hidden_act="relu",
                downsample_in_first_stage=False,
                downsample_in_bottleneck=False,  # torchvision's v1.5: the stride sits on the 3x3 conv
                out_features=list(_STAGES[3 - min(levels, 3) :]),
            ),
        )
    else:
        raise ValueError(f"backbone route must be 'transformers' or 'timm', got {route!r}")
    return config


def _resnet_name(bc: dict, where: str) -> str:
    layer_type, depths = bc.get("layer_type", "bottleneck"), bc.get("depths")
    if layer_type not in EXPANSION or not isinstance(depths, list):
        raise WeightsError(
            f"{where}: config.json backbone_config needs layer_type {' or '.join(map(repr, EXPANSION))} "
            f"and a list of depths, got {layer_type!r} and {depths!r}"
        )
    for name, (block, d) in RESNETS.items():
        if list(d) == depths and block == layer_type:
            return name
    raise WeightsError(f"{where}: backbone_config (ResNet {layer_type} {depths}) is none of {sorted(RESNETS)}")


def _label_table(config: dict, key: str, kind: type, where: str) -> None:
    """`key` absent, or an object of label numbers ("0", "1", ...) -> `kind`."""
    table = config.get(key)
    if table is None:
        return
    ok = isinstance(table, dict) and all(
        isinstance(k, str) and k.isdigit() and isinstance(v, kind) and not isinstance(v, bool) for k, v in table.items()
    )
    if not ok:
        what = "names" if kind is str else "category ids"
        raise WeightsError(f"{where}: config.json field {key!r}: expected an object of label numbers -> {what}")


def from_config(config: dict, where: str) -> dict:
    """The ddetr options a config.json states (those the tensors cannot tell included),
    each field checked against the table: type, range, and one value where ddetr has one
    option for two fields."""
    if not isinstance(config, dict):
        raise WeightsError(f"{where}: config.json is not a JSON object")
    for key, f in BY_KEY.items():
        if config.get(key) is not None:
            f.check(config[key], where)
    opts, source = {}, {}
    two_stage = bool(config.get("two_stage"))
    for f in FIELDS:
        v = config.get(f.key)
        if f.option is None or v is None or f.two_stage not in (None, two_stage):
            continue
        if f.option in opts and opts[f.option] != v:
            raise WeightsError(
                f"{where}: config.json has {source[f.option]}={opts[f.option]} but {f.key}={v}; "
                "ddetr uses one value for both"
            )
        opts[f.option], source[f.option] = v, f.key
    _label_table(config, "id2label", str, where)
    _label_table(config, CATEGORIES_KEY, int, where)
    for key, kind in (("backbone_config", dict), ("backbone", str), ("use_timm_backbone", bool)):
        if config.get(key) is not None and not isinstance(config[key], kind):
            expected = {dict: "an object", str: "a string", bool: "true or false"}[kind]
            raise WeightsError(f"{where}: config.json field {key!r} is {config[key]!r}: expected {expected} or null")
    bc = config.get("backbone_config")
    if isinstance(bc, dict) and bc.get("model_type") == "resnet":
        opts["backbone"] = _resnet_name(bc, where)
    else:  # a timm name: at the top (hub configs) or in a timm_backbone config (5.x)
        name = bc.get("backbone") if isinstance(bc, dict) else config.get("backbone")
        if name in RESNETS:
            opts["backbone"] = name
    if isinstance(config.get("id2label"), dict):
        opts["num_classes"] = len(config["id2label"])
    return opts
