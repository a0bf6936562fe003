"""Pictures, with PIL: detections (optionally with where the decoder's queries sample, the
paper's picture) and the training curve (loss and AP per epoch)."""

from __future__ import annotations

import colorsys

import torch
from PIL import Image, ImageDraw, ImageFont

MIN_PICTURE_SIZE = 640  # smaller images are enlarged to this long side, so labels stay readable


def colour(i: int) -> tuple:
    """A distinct bright colour per index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1)
    except TypeError:
        return ImageFont.load_default()


def draw_prediction(
    image: Image.Image, detections: list, points: list | None = None, min_size: int = MIN_PICTURE_SIZE
) -> Image.Image:
    """The image enlarged to a long side of at least `min_size` (never shrunk), on a band
    of margin above and below, with each detection's box and, outside it above its top
    edge, its label and score; `points` (sampling locations) under the boxes.

    detections: [{'box': [x0, y0, x1, y1], 'label': int, 'name': str, 'score': float}] in
    the image's pixels; points: [(label, (K, 2) absolute x, y, (K,) weights)]. A label
    whose place above its box is taken goes below the box."""
    scale = max(1.0, min_size / max(image.size))
    w, h = round(image.width * scale), round(image.height * scale)
    font = _font(max(12, round(max(w, h) / 40)))
    label_h = font.getbbox("Ag 0.99")[3] + 6
    out = Image.new("RGB", (w, h + 2 * label_h), (32, 32, 32))
    out.paste(image.convert("RGB").resize((w, h), Image.Resampling.LANCZOS), (0, label_h))
    d = ImageDraw.Draw(out)

    def at(x, y):  # image pixels -> picture pixels
        return x * scale, y * scale + label_h

    dot = max(2.0, max(w, h) / 200)
    for label, xy, weight in points or []:
        weight = weight / weight.max().clamp(min=1e-12)
        for (x, y), wi in zip(xy.tolist(), weight.tolist()):
            cx, cy = at(x, y)
            r = dot * (0.4 + 1.2 * wi)  # larger for more weight
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour(label))
    line = max(2, round(max(w, h) / 250))
    detections = sorted(detections, key=lambda det: -det["score"])  # the best get the first choice of place
    for det in detections:  # all boxes, then all labels: no line crosses a label
        d.rectangle([*at(*det["box"][:2]), *at(*det["box"][2:])], outline=colour(det["label"]), width=line)
    placed = []  # label rectangles drawn so far
    for det in detections:
        c = colour(det["label"])
        (x0, y0), (_, y1) = at(*det["box"][:2]), at(*det["box"][2:])
        text = f"{det.get('name', det['label'])} {det['score']:.2f}"
        tw = d.textlength(text, font=font) + 4
        tx = min(max(0.0, x0), max(0.0, w - tw))  # inside the picture's width
        # above the box (the margins keep room at the picture's edges), else below it where
        # the place above is taken by another label
        spots = [(tx, max(0.0, y0 - label_h)), (tx, min(y1 + 1, h + label_h))]
        rect = next(
            (r for r in ((x, y, x + tw, y + label_h - 1) for x, y in spots) if not _overlaps(r, placed)),
            (spots[0][0], spots[0][1], spots[0][0] + tw, spots[0][1] + label_h - 1),
        )
        placed.append(rect)
        d.rectangle(rect, fill=c)
        d.text((rect[0] + 2, rect[1] + 2), text, fill=(0, 0, 0), font=font)
    return out


def _overlaps(rect, others) -> bool:
    return any(rect[0] < o[2] and o[0] < rect[2] and rect[1] < o[3] and o[1] < rect[3] for o in others)


def draw_training_curve(epochs: list, size=(900, 420)) -> Image.Image:
    """Two panels from the epochs of log.txt ({'epoch', 'train_loss', 'test_loss'?,
    'test_AP'?, 'test_AP50'?}): the training (and validation) loss, and AP / AP50."""
    width, height = size
    out = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(out)
    font = _font(14)
    xs = [e["epoch"] + 1 for e in epochs]
    panels = [
        ("loss", [("train", "train_loss", (31, 119, 180)), ("validation", "test_loss", (255, 127, 14))]),
        ("AP", [("AP", "test_AP", (44, 160, 44)), ("AP50", "test_AP50", (214, 39, 40))]),
    ]
    panel_w = width // 2
    for i, (title, series) in enumerate(panels):
        box = (i * panel_w + 55, 35, (i + 1) * panel_w - 15, height - 45)  # plot area
        values = [e[key] for _, key, _ in series for e in epochs if e.get(key) is not None]
        lo, hi = (0.0, 1.0) if title == "AP" else (0.0, max(values, default=1.0) * 1.05 or 1.0)
        _axes(d, box, (min(xs, default=1), max(xs, default=1)), (lo, hi), title, font)
        for k, (name, key, c) in enumerate(series):
            pts = [
                (_px(box, x, (min(xs), max(xs)), v, (lo, hi)))
                for x, e in zip(xs, epochs)
                if (v := e.get(key)) is not None
            ]
            if len(pts) > 1:
                d.line(pts, fill=c, width=2)
            for px, py in pts:
                d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=c)
            d.text((box[2] - 90 * (len(series) - k), box[1] - 22), name, fill=c, font=font)  # legend
    return out


def _px(box, x, xr, y, yr) -> tuple:
    x0, y0, x1, y1 = box
    fx = 0.5 if xr[1] == xr[0] else (x - xr[0]) / (xr[1] - xr[0])
    fy = 0.5 if yr[1] == yr[0] else (y - yr[0]) / (yr[1] - yr[0])
    return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)


def _axes(d, box, xr, yr, title, font) -> None:
    x0, y0, x1, y1 = box
    d.rectangle(box, outline=(90, 90, 90))
    d.text((x0, y0 - 22), title + " per epoch", fill="black", font=font)
    for f in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = yr[0] + f * (yr[1] - yr[0])
        _, py = _px(box, xr[0], xr, y, yr)
        d.line([x0, py, x1, py], fill=(225, 225, 225))
        d.text((x0 - 50, py - 8), f"{y:.2f}", fill="black", font=font)
    ticks = sorted({xr[0], xr[1], (xr[0] + xr[1]) // 2})
    for x in ticks:
        px, _ = _px(box, x, xr, yr[0], yr)
        d.text((px - 6, y1 + 6), str(x), fill="black", font=font)
    d.text(((x0 + x1) / 2 - 20, y1 + 24), "epoch", fill="black", font=font)


class SamplingRecorder:
    """Records the sampling locations and weights of a decoder layer's cross-attention
    (an MSDeformAttn) during a forward pass."""

    def __init__(self, module):
        self.module, self.loc, self.weights = module, None, None
        self.handle = module.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        names = ("query", "reference_points", "input_flatten", "input_spatial_shapes")
        vals = dict(zip(names, args))
        vals.update({k: v for k, v in kwargs.items() if k in names})
        with torch.no_grad():
            self.loc, self.weights = module.sampling(
                vals["query"], vals["reference_points"], vals["input_spatial_shapes"]
            )

    def remove(self):
        self.handle.remove()
