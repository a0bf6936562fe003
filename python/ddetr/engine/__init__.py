"""Engine: what the `ddetr` command runs. One module per concern, imported on use
(`from ddetr.engine.train import train`):

- options: every option and default, resolved once per command
- build: data sets, loaders and the detector from the options
- train: the training step and the epoch loop
- evaluate: COCO evaluation, and `ddetr eval`
- checkpoint: atomic checkpoints, resuming, a model from a checkpoint
- precision, optim, distributed, progress: mixed precision, the optimiser, process groups,
  the progress line
- predict, demo: `ddetr predict` and `ddetr demo`
"""
