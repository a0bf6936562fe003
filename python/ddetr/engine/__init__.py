"""Engine: the training loop, COCO evaluation, checkpoints, distributed helpers, prediction
and the demo. The modules are imported on use (`from ddetr.engine.train import train`)."""
