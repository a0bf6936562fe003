"""The full Deformable DETR (ResNet-50, default variant, 300 queries): inference on an
800 x 1066 image at batch 1, and a training step (forward, losses, backward, AdamW step) at
batch 2. One extra, instrumented run splits the time between backbone, encoder, decoder and
the ms_deform_attn op (forward and backward); the split goes to extra_info as seconds."""

import time

import pytest
import torch

from conftest import devices, run_case, sync
from ddetr.models import build

SIZE = (800, 1066)
# The CPU cases take seconds per round: a few rounds keep the suite quick.
ROUNDS = {("cpu", "inference"): 3, ("cpu", "train"): 1, ("cuda", "inference"): 20, ("cuda", "train"): 10}


def _inputs(batch, device):
    g = torch.Generator().manual_seed(0)
    images = [torch.randn(3, *SIZE, generator=g).to(device) for _ in range(batch)]
    boxes = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.5], [0.5, 0.8, 0.1, 0.1]])
    targets = [dict(labels=torch.tensor([1, 17, 62], device=device), boxes=boxes.to(device)) for _ in range(batch)]
    return images, targets


def _event_time_s(prof, name, device):
    for e in prof.key_averages():
        if e.key == name:
            t = getattr(e, "device_time_total", None) if device == "cuda" else e.cpu_time_total
            if t is None:  # older profilers
                t = e.cuda_time_total
            return t / 1e6
    return 0.0


def time_split(model, fn, device, train):
    """Run `fn` once with synchronised forward hooks on the backbone, encoder and decoder
    (wall time) under the profiler (the op's own time: CPU time, or kernel time on CUDA)."""
    parts = {"backbone": model.backbone, "encoder": model.transformer.encoder, "decoder": model.transformer.decoder}
    spans, starts, handles = dict.fromkeys(parts, 0.0), {}, []
    for name, mod in parts.items():

        def pre(mod, args, name=name):
            sync(device)
            starts[name] = time.perf_counter()

        def post(mod, args, out, name=name):
            sync(device)
            spans[name] += time.perf_counter() - starts[name]

        handles += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    fwd = {}

    def model_pre(mod, args):
        sync(device)
        fwd["start"] = time.perf_counter()

    def model_post(mod, args, out):
        sync(device)
        fwd["s"] = time.perf_counter() - fwd["start"]

    handles += [model.register_forward_pre_hook(model_pre), model.register_forward_hook(model_post)]
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:
        with torch.profiler.profile(activities=activities) as prof:
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            total = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    split = {f"split_{k}_s": v for k, v in spans.items()}
    split["split_other_forward_s"] = fwd["s"] - sum(spans.values())  # input projections, heads
    if train:
        split["split_backward_loss_optimizer_s"] = total - fwd["s"]
    split["split_op_forward_s"] = _event_time_s(prof, "ddetr::ms_deform_attn", device)
    split["split_op_backward_s"] = _event_time_s(prof, "ddetr::ms_deform_attn_backward", device)
    split["split_total_s"] = total
    split["split_note"] = (
        "one profiled run with synchronised hooks (slower than the timed rounds); "
        "op time is CPU time of the op on CPU, kernel time on CUDA, and is "
        "included in encoder/decoder (forward) and backward"
    )
    return split


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("mode", ["inference", "train"])
def test_model(benchmark, mode, device):
    torch.manual_seed(0)
    model, criterion, _ = build()
    model.to(device)
    batch = 1 if mode == "inference" else 2
    images, targets = _inputs(batch, device)
    if mode == "inference":
        model.eval()

        def fn():
            with torch.no_grad():
                return model(images)
    else:
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)

        def fn():
            losses = criterion(model(images), targets)
            loss = criterion.weighted_total(losses)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 0.1)
            opt.step()

    extra = dict(
        model="deformable_detr_r50",
        image_size=f"{SIZE[0]}x{SIZE[1]}",
        batch=batch,
        params=sum(p.numel() for p in model.parameters()),
    )
    run_case(
        benchmark,
        ("model", mode, device, "float32", f"N={batch}"),
        "ddetr",
        fn,
        device,
        ROUNDS[(device, mode)],
        extra=extra,
    )
    if not benchmark.disabled:
        benchmark.extra_info.update(time_split(model, fn, device, train=mode == "train"))
