"""The smallest detector the command line can train in seconds, shared by the CLI and engine tests."""

TINY_MODEL = dict(
    backbone="resnet18",
    hidden_dim=32,
    nheads=4,
    enc_layers=1,
    dec_layers=1,
    dim_feedforward=64,
    num_queries=10,
    num_feature_levels=2,
)

# A little larger, for the compiled-forward and inference tests: two decoder layers and
# 64 channels, so batch-norm folding, heads and refinement are exercised.
COMPILE_MODEL = dict(
    backbone="resnet18",
    hidden_dim=64,
    nheads=8,
    dim_feedforward=128,
    enc_layers=1,
    dec_layers=2,
    num_queries=20,
    num_classes=7,
)

# The four published variants as model options on top of any base, for the model tests.
VARIANTS = {
    "default": dict(),
    "single_scale": dict(num_feature_levels=1),
    "box_refine": dict(with_box_refine=True),
    "two_stage": dict(with_box_refine=True, two_stage=True),
}

TINY_CLI = [
    *(s for k, v in TINY_MODEL.items() for s in ("--" + k.replace("_", "-"), str(v))),
    *"--num-workers 0 --device cpu --quiet".split(),
]
