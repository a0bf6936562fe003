"""HF transformers models before and after `ddetr.integrations.transformers.kernelize`, in
one run: the same model (random weights from an offline config, transformers' own ResNet and
Swin, no timm) on HF's pure-PyTorch deformable attention, then on ddetr's op.

- DeformableDetr, ResNet-50, 800 x 1066;
- Mask2Former, Swin-T (its smallest backbone), 512 x 512;
- RT-DETR, ResNet-50-vd, 640 x 640;

each for inference (batch 1) and a training step (batch 2: forward with HF's own losses,
backward, AdamW). HF eager runs first: the kernelized cases record `speedup_vs_hf` and peak
memory beside HF's. DeformableDetr also runs kernelized under bfloat16 autocast, eager and
compiled (inductor): the compiled case records its speed-up over the kernelized eager one
and how many of the attention layers' op calls sit inside its graphs (all of them: no
graph break at the attention).

The smoke run (--benchmark-disable) runs each case once on small images, and skips the
compile and HF's own training steps; the models and ddetr's code paths are the same.
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

from conftest import devices, run_case, sync

transformers = pytest.importorskip("transformers", reason="the bench extra (transformers) is not installed")
from ddetr.integrations.transformers import take_over  # noqa: E402

transformers.utils.logging.set_verbosity_error()

ROUNDS = {("cpu", "inference"): 3, ("cpu", "train"): 1, ("cuda", "inference"): 20, ("cuda", "train"): 10}
_medians = {}  # (device, model, mode, case) -> median of the cases run so far
_built = {}  # model name -> the model as built (random weights), copied by each case


def _deformable_detr():
    config = transformers.DeformableDetrConfig(
        use_timm_backbone=False,
        backbone_config=transformers.ResNetConfig(out_features=["stage2", "stage3", "stage4"]),  # ResNet-50
        auxiliary_loss=True,  # the losses of every decoder layer, as training uses
        num_labels=91,
    )
    return transformers.DeformableDetrForObjectDetection(config)


def _mask2former():
    swin_t = transformers.SwinConfig(
        embed_dim=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], window_size=7,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip
    config = transformers.Mask2FormerConfig(backbone_config=swin_t, num_labels=80)
    return transformers.Mask2FormerForUniversalSegmentation(config)


def _rt_detr():
    return transformers.RTDetrForObjectDetection(transformers.RTDetrConfig(num_labels=80))  # R50-vd, as rtdetr_r50vd


# name -> (builder, image size, smoke-run image size, kind of labels)
MODELS = {
    "deformable_detr_r50": (_deformable_detr, (800, 1066), (96, 128), "boxes"),
    "mask2former_swin_t": (_mask2former, (512, 512), (64, 64), "masks"),
    "rt_detr_r50": (_rt_detr, (640, 640), (160, 160), "boxes"),  # top-300 of the tokens: 160 px at least
}
# (case, autocast dtype or None, compiled)
CASES = [("hf-eager", None, False), ("kernelized", None, False)]
BF16_CASES = [("kernelized", torch.bfloat16, False), ("kernelized-compiled", torch.bfloat16, True)]
INFERENCE_CASES = [(n, c) for n in MODELS for c in CASES] + [("deformable_detr_r50", c) for c in BF16_CASES]
TRAIN_CASES = [(n, c) for n in MODELS for c in CASES]


def _labels(kind, batch, size, device):
    g = torch.Generator().manual_seed(1)
    labels = []
    for _ in range(batch):
        classes = torch.tensor([1, 17, 62])
        boxes = torch.tensor([[0.3, 0.4, 0.2, 0.3], [0.6, 0.5, 0.4, 0.5], [0.5, 0.8, 0.1, 0.1]])
        labels.append(dict(class_labels=classes.to(device), boxes=boxes.to(device)))
    if kind == "boxes":
        return dict(labels=labels)
    masks = (torch.rand(batch, 3, *size, generator=g) > 0.5).float().to(device)
    return dict(mask_labels=list(masks), class_labels=[t["class_labels"] for t in labels])


def _setup(name, device, case, training, small):
    build, size, smoke_size, kind = MODELS[name]
    size = smoke_size if small else size
    if name not in _built:  # building initialises every weight: seconds, so once per name
        torch.manual_seed(0)
        _built[name] = build()
    model = copy.deepcopy(_built[name]).to(device).train(training)
    extra = dict(model=name, image_size=f"{size[0]}x{size[1]}", params=sum(p.numel() for p in model.parameters()))
    if case != "hf-eager":
        report = take_over(model)
        extra["kernelized"] = report.line()
        extra["kernelized_layers"] = sum(report.taken.values())
        assert report.taken and not report.left, report.line()
    batch = 2 if training else 1
    pixels = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    extra["batch"] = batch
    return model, pixels, size, kind, extra


class _GraphCounter:
    """Inductor, keeping count of ddetr op calls inside the compiled graphs."""

    def __init__(self):
        self.op_calls = 0

    def __call__(self, gm, example_inputs):
        self.op_calls += sum(
            1 for n in gm.graph.nodes if n.op == "call_function" and str(n.target).startswith("ddetr.ms_deform_attn")
        )
        return torch._dynamo.lookup_backend("inductor")(gm, example_inputs)


def _record(benchmark, key, device, name, mode, case):
    stats = getattr(benchmark, "stats", None)
    if benchmark.disabled or stats is None:
        return
    median = _medians[device, name, mode, case] = stats.stats.median
    hf = _medians.get((device, name, mode, ("hf-eager", None, False)))
    if hf and case[0] != "hf-eager":
        benchmark.extra_info["speedup_vs_hf"] = hf / median
        benchmark.extra_info["hf_median_s"] = hf
    eager = _medians.get((device, name, mode, ("kernelized", case[1], False)))
    if eager and case[2]:
        benchmark.extra_info["speedup_vs_kernelized_eager"] = eager / median


def _case_id(case):
    name, dtype, _ = case
    return name + ("" if dtype is None else "-" + str(dtype).split(".")[-1])


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(
    "name, case",
    [(n, c) for n in MODELS for c in CASES] + [("deformable_detr_r50", c) for c in BF16_CASES],
    ids=[f"{n}-{_case_id(c)}" for n in MODELS for c in CASES]
    + [f"deformable_detr_r50-{_case_id(c)}" for c in BF16_CASES],
)
def test_inference(benchmark, name, case, device):
    label, dtype, compiled = case
    if compiled and benchmark.disabled:  # the compiled attention is tested by tests/test_integrations_transformers.py
        pytest.skip("compiled case: the minutes-long compile is skipped in the smoke run")
    model, pixels, _, _, extra = _setup(name, device, label, training=False, small=benchmark.disabled)
    run = model
    if compiled:
        counter = _GraphCounter()
        run = torch.compile(model, backend=counter)

    def fn():
        with torch.no_grad(), torch.autocast(device, dtype=dtype or torch.float32, enabled=dtype is not None):
            return run(pixel_values=pixels)

    if compiled:
        t0 = time.perf_counter()
        fn()
        sync(device)
        extra["compile_and_first_call_s"] = time.perf_counter() - t0
        extra["op_calls_in_graphs"] = counter.op_calls
        assert counter.op_calls == extra["kernelized_layers"], "a graph break at the attention"
    dt = "float32" if dtype is None else f"{str(dtype).split('.')[-1]}-autocast"
    key = ("hf_model", name, "inference", device, dt, "N=1", label)
    run_case(benchmark, key, "hf" if label == "hf-eager" else "ddetr", fn, device, ROUNDS[device, "inference"], extra)
    _record(benchmark, key, device, name, "inference", case)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize(
    "name, case", [(n, c) for n in MODELS for c in CASES], ids=[f"{n}-{c[0]}" for n in MODELS for c in CASES]
)
def test_train_step(benchmark, name, case, device):
    label = case[0]
    if label == "hf-eager" and benchmark.disabled:
        pytest.skip("HF's own training step: nothing of ddetr's in it to smoke-test")
    model, pixels, size, kind, extra = _setup(name, device, label, training=True, small=benchmark.disabled)
    labels = _labels(kind, pixels.shape[0], size, device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=1e-4)

    def fn():
        loss = model(pixel_values=pixels, **labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()

    key = ("hf_model", name, "train", device, "float32", "N=2", label)
    run_case(benchmark, key, "hf" if label == "hf-eager" else "ddetr", fn, device, ROUNDS[device, "train"], extra)
    _record(benchmark, key, device, name, "train", case)
