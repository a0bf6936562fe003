"""Engine: what the `ddetr` command runs. One module per concern, imported on use
(`from ddetr.engine.train import train`):

- commands/: the commands, one module each (HELP, add_arguments, run), which `ddetr.cli` wires
- options: every option and default, resolved once per command
- build: data sets, loaders and the detector from the options
- train: the training step and the epoch loop
- evaluate: COCO evaluation, and `ddetr eval`'s run
- predict: detections on image files
- runner: how eval and predict run a model (dtype, compile or not)
- checkpoint: atomic checkpoints, resuming
- precision, optim, distributed, progress: mixed precision, the optimiser, process groups,
  the progress line
"""
