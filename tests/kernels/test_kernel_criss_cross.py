"""The Triton criss-cross kernel against the plain-PyTorch reference: values, gradients, dispatch.

On the CPU the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET=1), which is
slow, so the shapes are small. With ABLATE_GPU_TESTS=1 on a CUDA machine the same tests run on
the GPU. Every buffer the kernels must fill is allocated full of NaN (the ``_POISON`` hook), so
an element no program writes fails the comparison instead of passing by luck.
"""
from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

from ablate_kernels.reference import criss_cross_reference  # noqa: E402
from ablate_kernels import criss_cross as cc  # noqa: E402
from ablate_kernels import dispatch  # noqa: E402

GPU = os.environ.get("ABLATE_GPU_TESTS", "0") not in ("", "0") and torch.cuda.is_available()
DEVICE = "cuda" if GPU else "cpu"
if not GPU and not dispatch.interpreting():
    pytest.skip("Triton kernels on CPU tensors need TRITON_INTERPRET=1", allow_module_level=True)


@pytest.fixture(autouse=True)
def _poison_outputs(monkeypatch):
    monkeypatch.setattr(cc, "_POISON", True)


def _inputs(B, d, c, H, W, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k = (torch.randn(B, d, H, W, generator=g, dtype=dtype) for _ in range(2))
    v = torch.randn(B, c, H, W, generator=g, dtype=dtype)
    return [t.to(DEVICE).requires_grad_(True) for t in (q, k, v)]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert torch.isfinite(a).all(), "non-finite values (an unwritten, NaN-poisoned element?)"
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def _compare(shape, dtype=torch.float32, tol=1e-4, seed=0):
    q, k, v = _inputs(*shape, dtype=dtype, seed=seed)
    out = cc.criss_cross(q, k, v)
    expected = criss_cross_reference(q, k, v)
    assert _rel(out, expected) <= tol
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype).to(DEVICE)
    got = torch.autograd.grad(out, (q, k, v), grad_out)
    want = torch.autograd.grad(expected, (q, k, v), grad_out)
    for name, a, b in zip("qkv", got, want):
        assert _rel(a, b) <= tol, f"d{name}"


# (B, d, c, H, W): non-powers of two everywhere, H != W both ways, one-pixel rows / columns
SHAPES = [(2, 5, 6, 5, 7), (1, 3, 5, 11, 6), (1, 4, 3, 1, 5), (1, 2, 3, 4, 1)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_values_and_gradients_match_reference(shape):
    _compare(shape)


def test_many_blocks_per_line_and_per_channel(monkeypatch):
    """Small blocks, so every line and the channels span several query, key and channel blocks:
    the online softmax, the row/column merge and dq's atomics all cross block boundaries.
    (The interpreter accepts tl.dot below 16, a GPU does not.)"""
    b = 16 if GPU else 4
    monkeypatch.setattr(cc, "_config", lambda kernel, L, d, c: dict(BLOCK_M=b, BLOCK_N=b, BLOCK_D=b, BLOCK_C=b))
    shape = (1, 3, 17, 17, 20) if GPU else (1, 2, 5, 5, 6)  # (B, d, c, H, W)
    _compare(shape, seed=3)


def test_default_launch_parameters():
    """Real map sizes get dot-sized blocks (>= 16) and a channel block that divides the work."""
    for kernel in ("fwd", "dkdq", "dv"):
        cfg = cc._config(kernel, 97, 64, 512)
        assert min(cfg[key] for key in ("BLOCK_M", "BLOCK_N", "BLOCK_D", "BLOCK_C")) >= 16
        assert cfg["BLOCK_D"] >= 64 and cfg["BLOCK_M"] == cfg["BLOCK_N"]
        assert cfg["BLOCK_C"] <= 128


def test_float64_values():
    _compare((1, 3, 4, 5, 6), dtype=torch.float64, tol=1e-12, seed=5)


def test_gradcheck_float64():
    q, k, v = _inputs(1, 2, 3, 3, 4, dtype=torch.float64, seed=7)
    # fast mode: one random direction per input, so a handful of interpreted launches
    assert torch.autograd.gradcheck(cc.criss_cross, (q, k, v), fast_mode=True)


def test_half_inputs_run_in_float32():
    q, k, v = (t.detach().to(torch.bfloat16) for t in _inputs(1, 3, 4, 5, 6, seed=9))
    out = cc.criss_cross(q, k, v)
    assert out.dtype == torch.bfloat16
    expected = criss_cross_reference(q.float(), k.float(), v.float())
    assert _rel(out.float(), expected) <= 1e-2


def test_non_contiguous_inputs():
    q, k, v = _inputs(1, 3, 4, 6, 5, seed=11)
    # channels-last memory and a transposed map: both must be read as their logical shape
    qn = q.detach().to(memory_format=torch.channels_last)
    kn = k.detach().transpose(2, 3).contiguous().transpose(2, 3)
    torch.testing.assert_close(cc.criss_cross(qn, kn, v.detach()), criss_cross_reference(q, k, v).detach(),
                               rtol=1e-4, atol=1e-5)


def test_saves_only_per_pixel_statistics():
    """Beyond inputs and output the autograd graph holds one number per pixel (the band's
    log-sum-exp), not the (H + W - 1)-wide band."""
    B, d, c, H, W = 2, 3, 4, 5, 6
    q, k, v = _inputs(B, d, c, H, W)
    out = cc.criss_cross(q, k, v)
    saved = sum(t.numel() for t in out.grad_fn.saved_tensors)
    assert saved == q.numel() + k.numel() + v.numel() + out.numel() + B * H * W


def test_dot_precision_policy(monkeypatch):
    """float64 is exact; float32 uses 3-pass TF32 unless torch allows plain TF32 matmuls."""
    monkeypatch.setattr(cc, "FP32_DOT_PRECISION", None)
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        assert cc._precision(torch.float64) == "ieee"
        assert cc._precision(torch.float32) == "tf32x3"
        matmul.allow_tf32 = True
        assert cc._precision(torch.float32) == "tf32"
        monkeypatch.setattr(cc, "FP32_DOT_PRECISION", "ieee")
        assert cc._precision(torch.float32) == "ieee"
        assert cc._precision(torch.float64) == "ieee"
    finally:
        matmul.allow_tf32 = before


def test_shape_mismatch_raises():
    q, k, v = _inputs(1, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="shape mismatch"):
        cc.criss_cross(q, k[:, :, :3], v)


def test_bytes_moved_floor():
    B, d, c, H, W = 2, 64, 512, 97, 97
    n = B * H * W
    assert cc.bytes_moved(B, d, c, H, W, 4) == 4 * n * (2 * d + 2 * c + 1 + 4 * d + 4 * c + 1)


# --------------------------------------------------------------------------------------------
# dispatch
# --------------------------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch):
    calls = {"kernel": 0, "reference": 0}
    kernel, reference = cc.criss_cross, cc.criss_cross_reference

    def kernel_counted(*args):
        calls["kernel"] += 1
        return kernel(*args)

    def reference_counted(*args):
        calls["reference"] += 1
        return reference(*args)

    monkeypatch.setattr(cc, "criss_cross", kernel_counted)
    monkeypatch.setattr(cc, "criss_cross_reference", reference_counted)
    return calls


def test_dispatch_reference(counted):
    q, k, v = _inputs(1, 2, 3, 4, 5)
    with dispatch.backend("reference"):
        out = cc.criss_cross_attention(q, k, v)
    assert counted == {"kernel": 0, "reference": 1}
    assert out.shape == v.shape


def test_dispatch_triton(counted):
    q, k, v = _inputs(1, 2, 3, 4, 5)
    with dispatch.backend("triton"):
        out = cc.criss_cross_attention(q, k, v)
    assert counted == {"kernel": 1, "reference": 0}
    assert _rel(out, criss_cross_reference(q, k, v)) <= 1e-4


def test_dispatch_auto_on_cpu_is_reference(counted):
    q, k, v = (t.detach().cpu() for t in _inputs(1, 2, 3, 4, 5))
    with dispatch.backend("auto"):
        cc.criss_cross_attention(q, k, v)
    assert counted == {"kernel": 0, "reference": 1}
