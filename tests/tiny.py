"""The smallest detector the command line can train in seconds, shared by the CLI and engine tests."""

TINY_CLI = (
    "--backbone resnet18 --hidden-dim 32 --nheads 4 --enc-layers 1 --dec-layers 1 --dim-feedforward 64 "
    "--num-queries 10 --num-feature-levels 2 --num-workers 0 --device cpu --quiet"
).split()
