"""The Triton local-window kernel equals ``local_window_reference`` (values and gradients), keeps
only per-pixel statistics for its backward, and is what the dispatcher runs when asked.

Triton runs in its interpreter here (TRITON_INTERPRET=1, set by conftest.py); every buffer a
kernel writes starts as NaN (the module's test hook), so an element no program writes fails.
"""
from __future__ import annotations

import pytest
import torch

import ablate_kernels.local_window as lw
from ablate_kernels.reference import local_window_reference
from ablate_kernels import dispatch

COMPOSABILITIES = ("dot", "squared_diff")


@pytest.fixture(autouse=True)
def _poisoned(monkeypatch):
    monkeypatch.setattr(lw, "_POISON_OUTPUTS", True)


def _inputs(B, G, d, C, H, W, window, dtype=torch.float32, seed=0, channels_last=False):
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        if channels_last:  # a non-contiguous view: the kernel must not assume the layout it is given
            b, c, h, w = shape
            return torch.randn(b, h, w, c, generator=gen, dtype=dtype).permute(0, 3, 1, 2).requires_grad_()
        return torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()

    q, k, v = rand(B, G * d, H, W), rand(B, G * d, H, W), rand(B, C, H, W)
    bias = torch.randn(G, window * window, generator=gen, dtype=dtype).requires_grad_()
    return q, k, v, bias


def _rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _compare(shape, window, composability, **kw):
    """Kernel vs reference: output and the gradients of q, k, v and the geometry bias."""
    q, k, v, bias = _inputs(*shape, window, **kw)
    out = lw.local_window(q, k, v, bias, window, composability)
    dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    grads = torch.autograd.grad(out, (q, k, v, bias), dout)
    ref = local_window_reference(q, k, v, bias, window, composability)
    ref_grads = torch.autograd.grad(ref, (q, k, v, bias), dout)
    for name, got, want in zip(("out", "dq", "dk", "dv", "dbias"), (out, *grads), (ref, *ref_grads)):
        assert got.shape == want.shape and got.dtype == want.dtype, name
        assert torch.isfinite(got).all(), f"{name}: unwritten (NaN) or non-finite elements"
        assert _rel_err(got, want) <= 1e-4, f"{name}: relative error {_rel_err(got, want):.2e}"


# shape = (B, G, d, C, H, W); H, W, d and C/G not powers of two
@pytest.mark.parametrize("composability", COMPOSABILITIES)
@pytest.mark.parametrize("shape, window", [
    ((2, 2, 3, 6, 7, 5), 3),
    ((1, 2, 3, 6, 7, 5), 5),
    ((1, 1, 2, 3, 3, 2), 7),  # window larger than the image: every pixel sees the whole image
    ((1, 3, 1, 24, 4, 6), 1),  # window 1: out = v; d = 1 and 8 value channels a group, as LR-Net
], ids=["7x5-w3", "7x5-w5", "3x2-w7", "w1-lrnet-groups"])
def test_kernel_equals_reference_values_and_gradients(shape, window, composability):
    _compare(shape, window, composability)


def test_non_contiguous_inputs():
    _compare((1, 2, 3, 4, 5, 6), 3, "dot", channels_last=True)


def test_several_tiles(monkeypatch):
    """2 x 4 tiles on a 3 x 5 image: tiles cut both ways, the last ones partial, and windows
    that reach into neighbouring tiles."""
    monkeypatch.setattr(lw, "_BLOCKS_OVERRIDE", dict(BLOCK_H=2, BLOCK_W=4, BLOCK_D=4, BLOCK_C=4))
    _compare((1, 1, 3, 3, 3, 5), 3, "squared_diff")


@pytest.mark.parametrize("composability", COMPOSABILITIES)
def test_several_channel_chunks(monkeypatch, composability):
    """d = 3 and C/G = 3 in chunks of 2: the chunked score and dot products, and the channel
    chunks of the grids (dk and dv owned by different programs)."""
    monkeypatch.setattr(lw, "_BLOCKS_OVERRIDE", dict(BLOCK_H=4, BLOCK_W=8, BLOCK_D=2, BLOCK_C=2))
    _compare((1, 1, 3, 3, 3, 5), 3, composability)


@pytest.mark.parametrize("composability", COMPOSABILITIES)
def test_gradcheck_float64(composability):
    q, k, v, bias = _inputs(1, 1, 2, 2, 3, 2, 3, dtype=torch.float64)
    out = lw.local_window(q, k, v, bias, 3, composability)
    assert out.dtype == torch.float64
    assert _rel_err(out, local_window_reference(q, k, v, bias, 3, composability)) <= 1e-12
    assert torch.autograd.gradcheck(lambda *t: lw.local_window(*t, 3, composability), (q, k, v, bias),
                                    fast_mode=True)


def test_backward_keeps_only_per_pixel_statistics():
    """Saved for backward: the inputs, the output and one number per pixel and group."""
    B, G, d, C, H, W, window = 1, 2, 3, 6, 7, 5, 5
    q, k, v, bias = _inputs(B, G, d, C, H, W, window)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        lw.local_window(q, k, v, bias, window)
    allowed = q.numel() + k.numel() + v.numel() + bias.numel() + v.numel() + B * G * H * W
    assert sum(saved) <= allowed < B * G * d * window * window * H * W  # an unfolded window would not fit


def test_poison_hook_fills_with_nan():
    assert torch.isnan(lw._new((2, 3), torch.zeros(1), torch.float32)).all()


def test_invalid_arguments():
    q, k, v, bias = _inputs(1, 2, 2, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="odd"):
        lw.local_window(q, k, v, torch.zeros(2, 16), 4)
    with pytest.raises(ValueError, match="composability"):
        lw.local_window(q, k, v, bias, 3, "cosine")
    with pytest.raises(ValueError, match="groups"):
        lw.local_window(q, k, v[:, :3], torch.zeros(2, 9), 3)
    with pytest.raises(ValueError, match="geometry_bias"):
        lw.local_window(q, k, v, torch.zeros(2, 25), 3)


def test_bytes_moved_is_every_tensor_read_or_written_once():
    q, k, v, bias = _inputs(2, 4, 3, 8, 5, 7, 3)
    out = v.detach()
    forward = [q, k, v, out]  # read q, k, v; write out
    backward = [q, k, v, out, q, k, v]  # read q, k, v, dout (out-sized); write dq, dk, dv
    total = sum(t.numel() for t in forward + backward) * 4
    assert lw.bytes_moved(2, 12, 8, 5, 7, 3, 4) == total


# --- dispatch ------------------------------------------------------------------------------

@pytest.fixture
def calls(monkeypatch):
    """Count calls of the kernel and of the reference (both still run)."""
    counts = {"kernel": 0, "reference": 0}
    kernel, reference = lw.local_window, lw.local_window_reference

    def counted_kernel(*a, **kw):
        counts["kernel"] += 1
        return kernel(*a, **kw)

    def counted_reference(*a, **kw):
        counts["reference"] += 1
        return reference(*a, **kw)

    monkeypatch.setattr(lw, "local_window", counted_kernel)
    monkeypatch.setattr(lw, "local_window_reference", counted_reference)
    return counts


@pytest.mark.parametrize("mode, runs", [("reference", "reference"), ("triton", "kernel"), ("auto", "reference")])
def test_dispatch(calls, mode, runs):
    q, k, v, bias = _inputs(1, 1, 2, 3, 3, 4, 1)
    with dispatch.backend(mode):
        out = lw.local_window_attention(q, k, v, bias, 1)
    assert calls == {"kernel": int(runs == "kernel"), "reference": int(runs == "reference")}
    torch.testing.assert_close(out, v)  # window 1: each pixel attends to itself only


# --- compiled mode -------------------------------------------------------------------------

_COMPILE_FOR_SM90 = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import ablate_kernels.local_window as lw

configs = [  # (one-chunk fast paths, dot) and (chunked paths, squared_diff)
    (dict(BLOCK_H=4, BLOCK_W=32, BLOCK_D=1, BLOCK_C=8), True, False),
    (dict(BLOCK_H=1, BLOCK_W=32, BLOCK_D=16, BLOCK_C=16), False, True),
]
for blocks, one, sqdiff in configs:
    for fn in (lw._fwd_kernel, lw._bwd_dq_kernel, lw._bwd_dkdv_kernel):
        consts = dict(KS=7, SQDIFF=sqdiff, ACC=tl.float32, ONE_D=one, ONE_C=one, ONE_CHUNK=one, **blocks)
        consts = {name: value for name, value in consts.items() if name in fn.arg_names}
        sig = {a: "constexpr" if a in consts else ("*fp32" if a.endswith("_ptr") else "i32") for a in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(n),): v for n, v in consts.items()})
        assert triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["cubin"]
print("compiled")
"""


@pytest.mark.slow
def test_kernels_compile_for_sm90(tmp_path):
    """The interpreter runs the kernels as Python and misses what only the compiler checks
    (types of loop-carried values, constexpr branches, layouts): compile them to an sm_90
    cubin, which needs Triton's bundled ptxas but no GPU."""
    import os
    import subprocess
    import sys

    pytest.importorskip("triton.backends.nvidia")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path)
    run = subprocess.run([sys.executable, "-c", _COMPILE_FOR_SM90], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0 and "compiled" in run.stdout, run.stderr[-3000:]
