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

TINY_CLI = [
    *(s for k, v in TINY_MODEL.items() for s in ("--" + k.replace("_", "-"), str(v))),
    *"--num-workers 0 --device cpu --quiet".split(),
]
