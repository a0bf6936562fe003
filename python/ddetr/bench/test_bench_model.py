"""The full Deformable DETR (ResNet-50, default variant, 300 queries): inference on an
800 x 1066 image at batch 1, and a training step (forward, losses, backward, clipping, AdamW
step) at batch 2: ddetr eager float32, under --amp (bfloat16 autocast), compiled (--compile)
and both, against HF transformers' DeformableDetrForObjectDetection with the same weights
(auxiliary losses on in both, so both compute the losses of every decoder layer), which runs
first so each ddetr case records its speed-up over it. One extra, instrumented run of the
eager cases splits the time between backbone, encoder, decoder and the ms_deform_attn op
(forward and backward); the split goes to extra_info as seconds."""

import time

import pytest
import torch

from ddetr.bench.harness import devices, run_case, sync
from ddetr.engine import precision
from ddetr.models import build

SIZE = (800, 1066)
# The CPU cases take seconds per round: a few rounds keep the suite quick.
ROUNDS = {("cpu", "inference"): 3, ("cpu", "train"): 1, ("cuda", "inference"): 20, ("cuda", "train"): 10}
# The training-step cases, in the order they run: HF first, then eager float32, the
# reference of the amp / compile cases. (name, amp, compile)
TRAIN_CASES = [("hf", False, False), ("eager", False, False), ("amp", True, False)]
TRAIN_CASES += [("compiled", False, True), ("compiled-amp", True, True)]
_train_medians = {}  # (device, case name) -> median of the cases run so far


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
def test_model(benchmark, device):
    torch.manual_seed(0)
    model, _, _ = build()
    model.to(device).eval()
    images, _ = _inputs(1, device)

    def fn():
        with torch.no_grad():
            return model(images)

    extra = dict(
        model="deformable_detr_r50",
        image_size=f"{SIZE[0]}x{SIZE[1]}",
        batch=1,
        params=sum(p.numel() for p in model.parameters()),
    )
    run_case(
        benchmark,
        ("model", "inference", device, "float32", "N=1"),
        "ddetr",
        fn,
        device,
        ROUNDS[(device, "inference")],
        extra=extra,
    )
    if not benchmark.disabled:
        benchmark.extra_info.update(time_split(model, fn, device, train=False))


def hf_train_step(model, images, targets):
    """HF's training step with `model`'s weights: HF matches and computes its own losses;
    auxiliary_loss (False in HF's config by default) is turned on, as ddetr's aux_loss."""
    from ddetr.bench.hf_peer import hf_inputs, hf_labels, hf_model

    hf = hf_model(model)
    hf.config.auxiliary_loss = True
    pixel_values, pixel_mask = hf_inputs(images)
    labels = hf_labels(targets)
    params = [p for p in hf.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)

    def fn():
        out = hf(pixel_values=pixel_values, pixel_mask=pixel_mask, labels=labels)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()

    return fn


def train_step(model, criterion, images, targets, device, amp: bool, compile: bool):
    """ddetr's training step as `ddetr train` takes it: precision.forward (bfloat16
    autocast with `amp`, outputs float32), the criterion, backward, clipping, AdamW; with
    `compile`, the model and the loss math compiled as --compile does."""
    device = torch.device(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=1e-4)
    run = model
    if compile:
        run = torch.compile(model, dynamic=True)
        criterion.compile_losses(dynamic=True)

    def fn():
        losses = criterion(precision.forward(run, images, amp, device), targets)
        loss = criterion.weighted_total(losses)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 0.1)
        opt.step()
        return loss.detach()

    return fn


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("case, amp, compile", TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_step(benchmark, case, amp, compile, device):
    if compile and benchmark.disabled:  # the compiled step is tested by tests/test_engine_compile.py
        pytest.skip("compiled training step: the minutes-long compile is skipped in the smoke run")
    torch.manual_seed(0)
    model, criterion, _ = build()
    model.to(device).train()
    images, targets = _inputs(2, device)
    extra = dict(
        model="deformable_detr_r50",
        image_size=f"{SIZE[0]}x{SIZE[1]}",
        batch=2,
        params=sum(p.numel() for p in model.parameters()),
        amp=amp,
        compile=compile,
    )
    if case == "hf":
        fn = hf_train_step(model, images, targets)
        extra["auxiliary_loss"] = True
    else:
        fn = train_step(model, criterion, images, targets, device, amp, compile)
        if compile:
            t0 = time.perf_counter()
            fn()  # compiles the forward, the backward and the loss math
            sync(device)
            extra["compile_and_first_call_s"] = time.perf_counter() - t0
    dtype = "bfloat16-autocast" if amp else "float32"
    key = ("model", "train", device, dtype, "N=2", case)
    run_case(benchmark, key, "hf" if case == "hf" else "ddetr", fn, device, ROUNDS[(device, "train")], extra=extra)
    stats = getattr(benchmark, "stats", None)
    if benchmark.disabled or stats is None:
        return
    median = _train_medians[device, case] = stats.stats.median
    if (device, "hf") in _train_medians and case != "hf":
        benchmark.extra_info["speedup_vs_hf"] = _train_medians[device, "hf"] / median
        benchmark.extra_info["hf_median_s"] = _train_medians[device, "hf"]
    if (amp or compile) and (device, "eager") in _train_medians:
        benchmark.extra_info["speedup_vs_eager_float32"] = _train_medians[device, "eager"] / median
    if case == "eager":
        benchmark.extra_info.update(time_split(model, fn, device, train=True))
