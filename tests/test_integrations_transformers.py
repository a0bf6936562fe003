"""ddetr.integrations.transformers.kernelize on tiny random HF models of every family with
multi-scale deformable attention, against transformers' own pure-PyTorch path: outputs,
parameter and input gradients, the op called once per layer, bfloat16 autocast,
torch.compile, and the report line. Skipped where transformers is absent."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from ddetr.integrations import transformers as ddetr_hf
from ddetr.integrations.transformers import layers
from hf_families import FAMILIES, CountOp, build, float_outputs, import_transformers, inputs, rel_err

import_transformers()

pytestmark = pytest.mark.usefixtures("one_thread")

GROUP_OF = {name: family.group for name, family in FAMILIES.items()}
ONE_PER_GROUP = ["deformable_detr", "mask2former", "d_fine"]


def run(model, x, backward=False):
    """Outputs, and with `backward` the gradients of a fixed random combination of them with
    respect to every parameter and the pixels."""
    x = dict(x, pixel_values=x["pixel_values"].clone().requires_grad_(backward))
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(backward), CountOp() as count:
        outputs = float_outputs(model(**x))
    grads = {}
    if backward:
        g = torch.Generator().manual_seed(2)
        loss = sum((t * torch.randn(t.shape, generator=g)).sum() for t in outputs if t.requires_grad)
        loss.backward()
        grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
        grads["pixel_values"] = x["pixel_values"].grad
    return [t.detach() for t in outputs], grads, count


def test_importing_ddetr_imports_no_transformers():
    code = "import sys, ddetr, ddetr.integrations.transformers; print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_outputs_and_gradients_match_transformers(name):
    family = FAMILIES[name]
    theirs_model, x = build(name), inputs(name)
    ours_model = copy.deepcopy(theirs_model)
    report = ddetr_hf.take_over(ours_model)
    assert dict(report.taken) == {name: family.layers} and not report.left, report.line()

    theirs, their_grads, their_count = run(theirs_model, x, backward=True)
    ours, our_grads, our_count = run(ours_model, x, backward=True)
    assert their_count.calls == 0 and our_count.calls == family.layers  # once per layer per forward
    assert len(ours) == len(theirs) > 0
    # each output to 1e-5 of its own scale, or to 1e-6 of the largest (an output that is a
    # difference of nearly equal numbers, e.g. pairwise order logits, loses its leading digits)
    largest = max(t.abs().max() for t in theirs)
    for o, t in zip(ours, theirs):
        assert (o - t).abs().max() <= 1e-5 * t.abs().max() + 1e-6 * largest
    assert our_grads.keys() == their_grads.keys() and "pixel_values" in our_grads
    # a gradient that is zero in exact arithmetic (a bias before a norm) is rounding noise on
    # both sides: each tensor is held to its own scale, or to a small part of the largest
    largest = max(t.abs().max() for t in their_grads.values())
    for key, t in their_grads.items():
        assert (our_grads[key] - t).abs().max() <= 1e-4 * t.abs().max() + 1e-6 * largest, key


def test_profiler_shows_one_op_event_per_layer():
    model, x = build("mask2former"), inputs("mask2former")
    ddetr_hf.kernelize(model, verbose=False)
    with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(**x)
    events = [e.name for e in prof.events() if e.name.startswith("ddetr::ms_deform_attn")]
    assert len(events) == FAMILIES["mask2former"].layers and "backward" not in " ".join(events)


def first_attention_call(model, x):
    """(module, args, kwargs) of the first call of a deformable-attention module (the one
    holding the projections around the core) in a forward of `model` on `x`."""
    calls = []
    targets = [m for m in model.modules() if _is_attention(m)]
    hooks = [m.register_forward_pre_hook(lambda m, a, k: calls.append((m, a, k)), with_kwargs=True) for m in targets]
    try:
        with torch.no_grad():
            model(**x)
    finally:
        for h in hooks:
            h.remove()
    return calls[0]


def _is_attention(module) -> bool:
    return type(module).__name__.endswith(("MultiscaleDeformableAttention", "MultiScaleDeformableAttention")) and any(
        isinstance(c, torch.nn.Linear) for c in module.children()
    )


@pytest.mark.parametrize("name", ONE_PER_GROUP)
def test_bfloat16_autocast(name):
    model, x = build(name), inputs(name)
    ddetr_hf.kernelize(model, verbose=False)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16), CountOp() as count:
        outputs = float_outputs(model(**x))
    assert count.calls == FAMILIES[name].layers and count.dtypes == {torch.bfloat16}
    assert all(torch.isfinite(t).all() for t in outputs)
    # one attention layer against its float32 self (whole-model outputs go through top-k
    # query selections, whose order bfloat16 may change). Alone, its value is the float32
    # hidden state it was given: the op follows the value's dtype (ddetr.ops), so a layer
    # without a value projection (D-FINE's) runs the op in float32, the others in bfloat16.
    module, args, kwargs = first_attention_call(model, x)
    with torch.no_grad():
        expected = float_outputs(module(*args, **kwargs))
        with torch.autocast("cpu", dtype=torch.bfloat16), CountOp() as alone:
            got = float_outputs(module(*args, **kwargs))
    projects_value = any(n in dict(module.named_children()) for n in ("value_proj", "value_projection"))
    assert alone.dtypes == {torch.bfloat16 if projects_value else torch.float32}
    for g, e in zip(got, expected):
        assert rel_err(g.float(), e) < 3e-2  # bfloat16 carries 8 bits


class CaptureGraphs:
    """A torch.compile backend that keeps dynamo's graphs and runs them through aot_eager
    (fake tensors, the autograd registration, functionalisation)."""

    def __init__(self):
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    def op_calls(self) -> int:
        return sum(
            1
            for gm in self.graphs
            for node in gm.graph.nodes
            if node.op == "call_function" and str(node.target).startswith("ddetr.ms_deform_attn")
        )


@pytest.mark.parametrize("name", ONE_PER_GROUP)
def test_compiled_attention_has_no_graph_break(name):
    """A taken-over attention module compiles whole (fullgraph), with the op in its graph,
    and matches eager."""
    model, x = build(name), inputs(name)
    ddetr_hf.kernelize(model, verbose=False)
    module, args, kwargs = first_attention_call(model, x)
    with torch.no_grad():
        expected = float_outputs(module(*args, **kwargs))
    torch._dynamo.reset()
    backend = CaptureGraphs()
    with torch.no_grad():
        got = float_outputs(torch.compile(module, backend=backend, fullgraph=True)(*args, **kwargs))
    assert len(backend.graphs) == 1 and backend.op_calls() == 1
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-6


def test_compiled_model_matches_eager():
    model, x = build("deformable_detr"), inputs("deformable_detr")
    ddetr_hf.kernelize(model, verbose=False)
    with torch.no_grad():
        expected = float_outputs(model(**x))
    torch._dynamo.reset()
    backend = CaptureGraphs()
    with torch.no_grad():
        got = float_outputs(torch.compile(model, backend=backend)(**x))
    assert backend.op_calls() == FAMILIES["deformable_detr"].layers  # every layer inside a graph
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-5


def test_only_the_given_model_changes():
    import transformers.models.mask2former.modeling_mask2former as m2f
    import transformers.models.rt_detr_v2.modeling_rt_detr_v2 as rtv2

    before = (m2f.multi_scale_deformable_attention, rtv2.multi_scale_deformable_attention_v2)
    forwards = {cls: cls.forward for cls in (m2f.Mask2FormerPixelDecoderEncoderMultiscaleDeformableAttention,)}
    ddetr_hf.kernelize(build("mask2former"), verbose=False)
    ddetr_hf.kernelize(build("rt_detr_v2"), verbose=False)
    ddetr_hf.kernelize(build("d_fine"), verbose=False)
    assert (m2f.multi_scale_deformable_attention, rtv2.multi_scale_deformable_attention_v2) == before
    assert all(cls.forward is f for cls, f in forwards.items())
    for name in ("mask2former", "rt_detr_v2", "d_fine", "deformable_detr"):
        with torch.no_grad(), CountOp() as count:
            build(name)(**inputs(name))
        assert count.calls == 0, name  # other instances of the same classes: transformers' path


def test_kernelize_prints_and_logs_one_line(capsys, caplog):
    model = build("rt_detr_v2")
    with caplog.at_level("INFO", logger="ddetr.integrations.transformers"):
        assert ddetr_hf.kernelize(model) is model
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and line in caplog.text
    assert "RTDetrV2ForObjectDetection" in line and "2 deformable-attention layers" in line and "rt_detr_v2 2" in line
    again = ddetr_hf.take_over(model)  # idempotent
    assert dict(again.taken) == {"rt_detr_v2": 2} and not again.left


def test_model_without_deformable_attention_is_left_as_is():
    transformers = import_transformers()
    config = transformers.BertConfig(
        vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8
    )
    model = transformers.BertModel(config)
    report = ddetr_hf.take_over(model)
    assert not report.taken and not report.left
    assert (
        report.line() == "ddetr kernelize BertModel: no multi-scale deformable attention found; the model is unchanged"
    )


def test_discrete_sampling():
    """d_fine with method "discrete" runs on ddetr's generalised op, with HF's outputs."""
    theirs, x = build("d_fine", decoder_method="discrete"), inputs("d_fine")
    ours = copy.deepcopy(theirs)
    report = ddetr_hf.take_over(ours)
    assert dict(report.taken) == {"d_fine": 2} and not report.left
    with torch.no_grad(), CountOp() as count:
        got = float_outputs(ours(**x))
    assert count.calls == 2
    with torch.no_grad():
        expected = float_outputs(theirs(**x))
    for g, e in zip(got, expected):
        assert rel_err(g, e) < 1e-5


def test_an_unknown_sampling_method_is_left_with_the_reason():
    core, why = layers.v2_core("bicubic")
    assert core is None and why == "its sampling method 'bicubic' is not one of default, discrete"


def test_layers_that_do_not_fit_are_left_with_the_reason():
    class MultiScaleDeformableAttention(torch.nn.Module):  # transformers' name, another signature
        def forward(self, value, shapes, locations, weights):
            return value

    class FooMultiscaleDeformableAttention(torch.nn.Module):  # no core we know inside
        def forward(self, x):
            return x

    model = torch.nn.Sequential(MultiScaleDeformableAttention(), FooMultiscaleDeformableAttention())
    report = ddetr_hf.take_over(model)
    assert not report.taken
    reasons = {family_reason[1] for family_reason in report.left}
    assert any(r.startswith("its forward takes ('self', 'value', 'shapes'") for r in reasons)
    assert "an unknown deformable attention (no known core inside it)" in reasons
    assert sum(report.left.values()) == 2


def test_a_device_without_a_kernel_leaves_every_layer(monkeypatch):
    from ddetr.integrations.transformers import takeover

    monkeypatch.setattr(takeover, "op_has_kernel", lambda device: device != "cpu")
    model = build("deformable_detr")
    report = ddetr_hf.take_over(model)
    assert not report.taken and report.left == {("deformable_detr", "this ddetr build has no cpu kernel"): 3}
    with torch.no_grad(), CountOp() as count:
        model(**inputs("deformable_detr"))
    assert count.calls == 0


@pytest.mark.parametrize("points", [[2, 2, 2], [1, 3, 2]], ids=["equal", "ragged"])
def test_v2_core_matches_transformers_in_float64(points):
    """The group C core (ddetr.ms_deform_attn_v2) against transformers' function, gradients
    included, with equal and per-level point counts."""
    from transformers.models.d_fine.modeling_d_fine import multi_scale_deformable_attention_v2 as theirs

    core, why = layers.v2_core("default")
    assert why is None
    cores = {core}
    shapes = [(6, 5), (3, 4), (2, 2)]
    g = torch.Generator().manual_seed(0)
    n, lq, m, d = 2, 7, 2, 4
    value = torch.randn(n, sum(h * w for h, w in shapes), m, d, dtype=torch.float64, generator=g)
    locations = torch.rand(n, lq, m, sum(points), 2, dtype=torch.float64, generator=g) * 1.2 - 0.1
    weights = torch.rand(n, lq, m, sum(points), dtype=torch.float64, generator=g)
    grad_out = torch.randn(n, lq, m * d, dtype=torch.float64, generator=g)

    def grads(fn):
        args = [t.clone().requires_grad_() for t in (value, locations, weights)]
        out = fn(args[0], shapes, args[1], args[2], points, "default")
        out.backward(grad_out)
        return [out.detach()] + [a.grad for a in args]

    expected = grads(theirs)
    for fn in cores:
        for got, want in zip(grads(fn), expected):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_v2_core_refuses_unknown_methods():
    core, why = layers.v2_core("bicubic")
    assert core is None and "'bicubic'" in why


def test_register_without_kernels_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "kernels", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs the `kernels` package .* use .*kernelize\(model\)"):
        ddetr_hf.register()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ONE_PER_GROUP)
def test_cuda_outputs_and_gradients_match_transformers(name, monkeypatch):
    if not layers.op_has_kernel("cuda"):
        pytest.skip("this ddetr build has no CUDA kernel")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # both sides' convolutions in float32
    theirs_model, x = build(name).cuda(), {k: v.cuda() for k, v in inputs(name).items()}
    ours_model = copy.deepcopy(theirs_model)
    assert dict(ddetr_hf.take_over(ours_model).taken) == {name: FAMILIES[name].layers}
    theirs, their_grads, _ = run(theirs_model, x, backward=True)
    ours, our_grads, count = run(ours_model, x, backward=True)
    assert count.calls == FAMILIES[name].layers
    largest = max(t.abs().max() for t in theirs)
    for o, t in zip(ours, theirs):
        assert (o - t).abs().max() <= 1e-5 * t.abs().max() + 1e-6 * largest
    largest = max(t.abs().max() for t in their_grads.values())
    for key, t in their_grads.items():
        assert (our_grads[key] - t).abs().max() <= 1e-4 * t.abs().max() + 1e-6 * largest, key
