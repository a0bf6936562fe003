"""Malformed arguments get a clear exception naming the argument, never a crash. Each case
also runs in a fresh process in test_errors_in_subprocess, so a crash would fail it
rather than take the suite down.

The op library sits on LibTorch's stable ABI, across which an exception reaches Python
only as RuntimeError: the message is what carries the argument and what was expected."""

import os
import subprocess
import sys

import pytest
import torch

from op_cases import make_inputs

op = torch.ops.ddetr.ms_deform_attn
op_backward = torch.ops.ddetr.ms_deform_attn_backward


def good():
    v, s, st, lc, a = make_inputs([[4, 5], [2, 3]], 2, 3, 2, 4, 2)
    return dict(value=v, spatial_shapes=s, level_start_index=st, sampling_locations=lc, attention_weights=a)


def with_(**changes):
    def build():
        args = good()
        for k, f in changes.items():
            args[k] = f(args[k]) if callable(f) else f
        return args

    return build


# (name, arguments, words the message must contain)
BAD = [
    ("value rank", with_(value=lambda v: v[0]), "value must have 4 dimensions"),
    ("locations rank", with_(sampling_locations=lambda t: t[..., 0]), "sampling_locations must have 6 dimensions"),
    ("weights rank", with_(attention_weights=lambda t: t[..., None]), "attention_weights must have 5 dimensions"),
    ("shapes rank", with_(spatial_shapes=lambda s: s.flatten()), "spatial_shapes must have 2 dimensions"),
    ("start rank", with_(level_start_index=lambda s: s[None]), "level_start_index must have 1 dimensions"),
    ("S mismatch", with_(value=lambda v: v[:, :-1]), "value has S = 25"),
    ("S larger", with_(value=lambda v: torch.cat([v, v[:, :1]], 1)), "S = 27"),
    ("start inconsistent", with_(level_start_index=torch.tensor([0, 19])), "level_start_index[1] must be 20"),
    ("start length", with_(level_start_index=torch.tensor([0])), "level_start_index has 1 levels"),
    ("start nonzero", with_(level_start_index=torch.tensor([1, 21])), "level_start_index[0] must be 0"),
    ("zero height", with_(spatial_shapes=torch.tensor([[0, 5], [2, 3]])), "spatial_shapes[0] must be positive"),
    ("negative", with_(spatial_shapes=torch.tensor([[-4, -5], [2, 3]])), "must be positive"),
    ("overflowing shapes", with_(spatial_shapes=torch.tensor([[2**40, 2**40], [2, 3]])), "value has S = 26 rows but"),
    (
        "no levels",
        with_(spatial_shapes=torch.zeros(0, 2, dtype=torch.int64), level_start_index=torch.zeros(0, dtype=torch.int64)),
        "at least one level",
    ),
    (
        "shapes columns",
        with_(spatial_shapes=lambda s: torch.cat([s, s[:, :1]], 1)),
        "spatial_shapes has 3 entries per level",
    ),
    ("L mismatch", with_(sampling_locations=lambda t: t[:, :, :, :1]), "sampling_locations has 1 levels"),
    ("M mismatch", with_(sampling_locations=lambda t: t[:, :, :1]), "sampling_locations has 1 heads"),
    ("N mismatch", with_(sampling_locations=lambda t: t[:1]), "sampling_locations has 1 batch entries"),
    ("weights N", with_(attention_weights=lambda t: t[:1]), "attention_weights has 1 batch entries"),
    ("weights Lq", with_(attention_weights=lambda t: t[:, :1]), "attention_weights has 1 queries"),
    ("P mismatch", with_(attention_weights=lambda t: t[..., :1]), "attention_weights has 1 points"),
    (
        "coords",
        with_(sampling_locations=lambda t: torch.cat([t, t[..., :1]], -1)),
        "sampling_locations has 3 coordinates",
    ),
    (
        "mixed dtypes",
        with_(sampling_locations=lambda t: t.float()),
        "sampling_locations must be torch.float64 like value, got torch.float32",
    ),
    (
        "integer weights",
        with_(attention_weights=lambda t: t.long()),
        "attention_weights must be a floating-point tensor, got torch.int64",
    ),
    ("integer value", with_(value=lambda v: v.long()), "value must be a floating-point tensor"),
    ("float shapes", with_(spatial_shapes=lambda s: s.float()), "spatial_shapes must be an integer tensor"),
    ("bool start", with_(level_start_index=lambda s: s.bool()), "level_start_index must be an integer tensor"),
    ("meta device", with_(value=lambda v: v.to("meta")), "one device"),
]


@pytest.mark.parametrize("name,build,words", BAD, ids=[b[0] for b in BAD])
def test_bad_input_forward(name, build, words):
    args = build()
    with pytest.raises(RuntimeError) as info:
        op(*args.values(), 64)
    assert words in str(info.value)


@pytest.mark.parametrize("step", [0, -64])
def test_bad_im2col_step(step):
    with pytest.raises(RuntimeError, match="im2col_step must be positive"):
        op(*good().values(), step)


def test_bad_grad_output():
    args = list(good().values())
    out = op(*args, 64)
    with pytest.raises(RuntimeError, match="grad_output must have shape"):
        op_backward(out[:, :1], *args, 64)
    with pytest.raises(RuntimeError, match="grad_output must be"):
        op_backward(out.float(), *args, 64)
    # the backward checks its forward arguments too
    args[0] = args[0][:, :-1]
    with pytest.raises(RuntimeError, match="value has S"):
        op_backward(out, *args, 64)


def test_errors_in_subprocess():
    # every case in one fresh process: a crash (signal) fails this test instead of pytest
    code = (
        "import sys; sys.path.insert(0, 'tests'); import ddetr, torch;"
        "from test_op_errors import BAD, op;\n"
        "for name, build, words in BAD:\n"
        "    try:\n"
        "        op(*build().values(), 64)\n"
        "    except RuntimeError as e:\n"
        "        assert words in str(e), (name, str(e))\n"
        "    else:\n"
        "        raise AssertionError(name + ' did not raise')\n"
        "print('ok', len(BAD))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    res = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, (res.returncode, res.stderr[-2000:])
    assert res.stdout.strip() == f"ok {len(BAD)}"
