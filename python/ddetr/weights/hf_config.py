"""transformers' DeformableDetrConfig (config.json) <-> ddetr model options.

Two backbone routes: 'transformers' writes `use_timm_backbone: false` and a ResNet
`backbone_config`, which transformers builds with its own ResNet (no timm needed);
'timm' writes what hub configs carry (`use_timm_backbone: true`, `backbone: resnet50`),
which needs timm (and so torchvision) wherever it is loaded."""

from __future__ import annotations

from ..models.config import EXPANSION, RESNETS
from .errors import WeightsError

_STAGES = ("stage2", "stage3", "stage4")  # C3..C5, as ddetr's Backbone returns them


def to_config(opts: dict, route: str, id2label: dict | None = None) -> dict:
    levels = opts["num_feature_levels"]
    config = dict(
        model_type="deformable_detr",
        architectures=["DeformableDetrForObjectDetection"],
        d_model=opts["hidden_dim"],
        encoder_layers=opts["enc_layers"],
        decoder_layers=opts["dec_layers"],
        encoder_ffn_dim=opts["dim_feedforward"],
        decoder_ffn_dim=opts["dim_feedforward"],
        encoder_attention_heads=opts["nheads"],
        decoder_attention_heads=opts["nheads"],
        encoder_n_points=opts["enc_n_points"],
        decoder_n_points=opts["dec_n_points"],
        num_feature_levels=levels,
        with_box_refine=opts["with_box_refine"],
        two_stage=opts["two_stage"],
        num_queries=opts.get("num_queries", 300),
        two_stage_num_proposals=opts.get("num_queries", 300),
        position_embedding_type=opts.get("position_embedding", "sine"),
        dilation=opts.get("dilation", False),
        activation_function="relu",
        auxiliary_loss=False,
        use_pretrained_backbone=False,
        id2label={str(i): (id2label or {}).get(i, f"LABEL_{i}") for i in range(opts["num_classes"])},
    )
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
    layer_type = bc.get("layer_type", "bottleneck")
    for name, (block, depths) in RESNETS.items():
        if list(depths) == list(bc.get("depths", ())) and block == layer_type:
            return name
    raise WeightsError(
        f"{where}: backbone_config (ResNet {bc.get('layer_type')} {bc.get('depths')}) is none of {sorted(RESNETS)}"
    )


def from_config(config: dict, where: str) -> dict:
    """The ddetr options a config.json states (those the tensors cannot tell included)."""

    def same(a, b):
        if config.get(a, config.get(b)) != config.get(b, config.get(a)):
            raise WeightsError(
                f"{where}: config.json has {a}={config.get(a)} but {b}={config.get(b)}; ddetr uses one value for both"
            )
        return config.get(a)

    opts = {}
    for key, name in (
        ("d_model", "hidden_dim"),
        ("encoder_layers", "enc_layers"),
        ("decoder_layers", "dec_layers"),
        ("encoder_n_points", "enc_n_points"),
        ("decoder_n_points", "dec_n_points"),
        ("num_feature_levels", "num_feature_levels"),
        ("with_box_refine", "with_box_refine"),
        ("two_stage", "two_stage"),
        ("dilation", "dilation"),
        ("position_embedding_type", "position_embedding"),
    ):
        if config.get(key) is not None:
            opts[name] = config[key]
    if same("encoder_ffn_dim", "decoder_ffn_dim") is not None:
        opts["dim_feedforward"] = config["encoder_ffn_dim"]
    if same("encoder_attention_heads", "decoder_attention_heads") is not None:
        opts["nheads"] = config["encoder_attention_heads"]
    queries = config.get("two_stage_num_proposals" if config.get("two_stage") else "num_queries")
    if queries is not None:
        opts["num_queries"] = queries
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
