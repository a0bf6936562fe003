"""Pictures: small images enlarged, labels outside their box, boxes' insides untouched, the
training curve drawn from log.txt's epochs."""

import numpy as np
import torch
from PIL import Image

from ddetr.visualize import MIN_PICTURE_SIZE, colour, draw_prediction, draw_training_curve


def test_prediction_enlarged_with_label_outside_the_box():
    image = Image.new("RGB", (160, 128), (200, 200, 200))
    det = {"box": [40.0, 0.0, 100.0, 60.0], "label": 2, "name": "square", "score": 0.87}  # touches the top
    picture = draw_prediction(image, [det])
    scale = MIN_PICTURE_SIZE / 160
    assert picture.width == MIN_PICTURE_SIZE and picture.height > 128 * scale
    margin = (picture.height - round(128 * scale)) // 2  # the band above the image
    a = np.asarray(picture)
    x0, x1, y1 = round(40 * scale), round(100 * scale), round(60 * scale) + margin
    # the label sits above the box (in the margin here), in the detection's colour
    label = a[:margin, x0 : x0 + 20].reshape(-1, 3)
    assert (label == colour(2)).all(-1).mean() > 0.3
    # nothing is drawn inside the box: the image shows through
    inside = a[margin + 10 : y1 - 10, x0 + 10 : x1 - 10].reshape(-1, 3)
    assert (inside == 200).all()
    # the outline is there
    assert (a[margin + 30, x0 - 1 : x0 + 2] == colour(2)).all(-1).any()


def test_large_images_keep_their_size_and_points_are_drawn():
    image = Image.new("RGB", (1000, 700), (0, 0, 0))
    points = [(5, torch.tensor([[100.0, 100.0], [900.0, 600.0]]), torch.tensor([1.0, 0.5]))]
    picture = draw_prediction(image, [], points)
    a = np.asarray(picture)
    margin = (picture.height - 700) // 2
    assert picture.width == 1000
    assert (a[margin + 100, 100] == colour(5)).all() and (a[margin + 600, 900] == colour(5)).all()


def test_training_curve_plots_each_series():
    epochs = [{"epoch": e, "train_loss": 5.0 - e, "test_AP": 0.1 * e, "test_AP50": 0.2 * e} for e in range(4)]
    epochs[1].pop("test_AP")  # an epoch without evaluation
    a = np.asarray(draw_training_curve(epochs, size=(900, 420)))
    left, right = a[:, :450].reshape(-1, 3), a[:, 450:].reshape(-1, 3)

    def has(part, c):
        return (part == c).all(-1).sum() > 200  # a line and markers (the legend alone has ~45)

    assert has(left, (31, 119, 180)) and not has(right, (31, 119, 180))  # training loss, left panel
    assert has(right, (44, 160, 44)) and has(right, (214, 39, 40))  # AP and AP50, right panel
