"""Drawing detections, and the paper's picture of where decoder queries sample, with PIL."""
from __future__ import annotations

import colorsys

import torch
from PIL import Image, ImageDraw, ImageFont


def colour(i: int) -> tuple:
    """A distinct bright colour per index (golden-ratio hue steps)."""
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_detections(image: Image.Image, detections: list, width: int | None = None) -> Image.Image:
    """detections: [{'box': [x0, y0, x1, y1], 'label': int, 'name': str, 'score': float}]."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    font = ImageFont.load_default()
    width = width or max(1, round(max(out.size) / 250))
    for det in detections:
        c = colour(det["label"])
        x0, y0, x1, y1 = det["box"]
        d.rectangle([x0, y0, x1, y1], outline=c, width=width)
        text = f"{det.get('name', det['label'])} {det['score']:.2f}"
        tb = d.textbbox((x0, y0), text, font=font)
        ty = y0 - (tb[3] - tb[1]) - 2 if y0 - (tb[3] - tb[1]) - 2 >= 0 else y0
        tb = d.textbbox((x0, ty), text, font=font)
        d.rectangle([tb[0] - 1, tb[1] - 1, tb[2] + 1, tb[3] + 1], fill=c)
        d.text((x0, ty), text, fill=(0, 0, 0), font=font)
    return out


def draw_sampling_points(image: Image.Image, points: list) -> Image.Image:
    """points: [(label, (K, 2) absolute x, y, (K,) weights)] drawn as dots whose size grows
    with the attention weight, in the colour of the detection they belong to."""
    out = image.convert("RGB").copy()
    d = ImageDraw.Draw(out)
    base = max(1.0, max(out.size) / 200)
    for label, xy, w in points:
        c = colour(label)
        w = w / w.max().clamp(min=1e-12)
        for (x, y), wi in zip(xy.tolist(), w.tolist()):
            r = base * (0.4 + 1.2 * wi)
            d.ellipse([x - r, y - r, x + r, y + r], fill=c)
    return out


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
            self.loc, self.weights = module.sampling(vals["query"], vals["reference_points"],
                                                     vals["input_spatial_shapes"])

    def remove(self):
        self.handle.remove()
