"""torchvision ResNet-50 state_dict names and shapes, shared by the backbone and checkpoint tests."""


def torchvision_resnet50_shapes():
    """torchvision resnet50 state_dict names and shapes (less fc), as in checkpoint_keys.md."""
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(p, c):
        return {f"{p}.{k}": (c,) for k in ("weight", "bias", "running_mean", "running_var")}

    shapes.update(bn("bn1", 64))
    inplanes = 64
    for li, (planes, blocks) in enumerate([(64, 3), (128, 4), (256, 6), (512, 3)], start=1):
        for b in range(blocks):
            cin = inplanes if b == 0 else 4 * planes
            p = f"layer{li}.{b}"
            shapes[f"{p}.conv1.weight"] = (planes, cin, 1, 1)
            shapes[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            shapes[f"{p}.conv3.weight"] = (4 * planes, planes, 1, 1)
            shapes.update(bn(f"{p}.bn1", planes) | bn(f"{p}.bn2", planes) | bn(f"{p}.bn3", 4 * planes))
            if b == 0:
                shapes[f"{p}.downsample.0.weight"] = (4 * planes, cin, 1, 1)
                shapes.update(bn(f"{p}.downsample.1", 4 * planes))
        inplanes = 4 * planes
    return shapes
