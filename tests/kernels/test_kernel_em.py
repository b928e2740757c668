"""The fused EM-attention kernel (kernels/em.py) against the reference em_iterations.

On a CPU these run Triton's interpreter (TRITON_INTERPRET=1, set in conftest.py); shapes are
small and block sizes forced down to 16 so that every case spans several pixel blocks and
channel chunks and exercises the masking of non-power-of-two C, N and K.
"""
from __future__ import annotations

import pytest
import torch

from ablate.attention.ema import EMABlock
from ablate_kernels import dispatch, em, reference

SMALL = dict(block_n=16, block_c=16)  # several blocks even at these sizes

# (B, C, N, K): non-powers of two everywhere, N and C spanning several blocks, K < 16 and > 16.
SHAPES = [(2, 5, 37, 3), (2, 19, 100, 7), (1, 32, 64, 16), (3, 40, 50, 21)]


def inputs(B, C, N, K, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, N, generator=g, dtype=torch.float64)
    mu = reference.l2_normalise(torch.randn(B, C, K, generator=g, dtype=torch.float64), dim=1)
    return x.to(dtype), mu.to(dtype)


def rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()


def assert_matches(got, want, tol):
    (mu, z), (mu_r, z_r) = got, want
    assert mu.shape == mu_r.shape and z.shape == z_r.shape
    assert mu.dtype == mu_r.dtype and z.dtype == z_r.dtype
    assert torch.isfinite(mu).all() and torch.isfinite(z).all()
    assert rel_err(mu, mu_r) <= tol, rel_err(mu, mu_r)
    assert rel_err(z, z_r) <= tol, rel_err(z, z_r)


@pytest.fixture
def poisoned(monkeypatch):
    """Outputs start as NaN, so an element the kernels never write fails the comparison."""
    calls = []

    def nan_empty(size, **kw):
        calls.append(size)
        return torch.full(size, float("nan"), **kw)

    monkeypatch.setattr(em, "_empty", nan_empty)
    return calls


@pytest.mark.parametrize("deterministic", [False, True], ids=["atomic", "split"])
@pytest.mark.parametrize("T", [1, 3])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_fused_matches_reference(shape, T, deterministic, poisoned):
    x, mu = inputs(*shape, seed=sum(shape) + T)
    got = em.em_iterations_fused(x, mu, T, deterministic=deterministic, **SMALL)
    assert len(poisoned) >= 2  # the NaN allocator really provided the outputs
    assert_matches(got, reference.em_iterations(x, mu, T), 1e-4)


def test_default_launch_config(poisoned):
    x, mu = inputs(2, 19, 150, 7, seed=3)
    assert_matches(em.em_iterations_fused(x, mu, 3), reference.em_iterations(x, mu, 3), 1e-4)


def test_broadcast_bases_and_strided_input(poisoned):
    # EMBases passes its (1, C, K) buffer expanded over the batch (stride 0), and x may be a view.
    B, C, N, K = 3, 12, 45, 5
    x_nc, mu1 = inputs(B, N, C, K)[0], inputs(1, C, 1, K, seed=1)[1]
    x = x_nc.transpose(1, 2)  # (B, C, N), not contiguous
    want = reference.em_iterations(x, mu1.expand(B, -1, -1), 3)
    assert_matches(em.em_iterations_fused(x, mu1.expand(B, -1, -1), 3, **SMALL), want, 1e-4)
    assert_matches(em.em_iterations_fused(x, mu1, 3, **SMALL), want, 1e-4)  # batch 1 broadcasts


def test_float64(poisoned):
    x, mu = inputs(2, 19, 37, 7, dtype=torch.float64)
    for det in (False, True):
        assert_matches(em.em_iterations_fused(x, mu, 3, deterministic=det, **SMALL),
                       reference.em_iterations(x, mu, 3), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_close_to_float64(dtype):
    # The kernel keeps softmax and sums in fp32, so it is at least as close to the float64
    # answer as the reference run in the 16-bit dtype (within one rounding of that dtype).
    x, mu = inputs(2, 19, 37, 7, dtype=torch.float64)
    exact = reference.em_iterations(x, mu, 2)
    got = em.em_iterations_fused(x.to(dtype), mu.to(dtype), 2, **SMALL)
    ref = reference.em_iterations(x.to(dtype), mu.to(dtype), 2)
    ulp = torch.finfo(dtype).eps
    for g, r, e in zip(got, ref, exact):
        assert g.dtype == dtype
        assert rel_err(g, e) <= rel_err(r, e) + 2 * ulp


def test_bases_unit_norm_and_responsibilities_sum_to_one():
    x, mu = inputs(2, 19, 45, 7)
    mu_f, z = em.em_iterations_fused(x, mu, 3, **SMALL)
    torch.testing.assert_close(mu_f.norm(dim=1), torch.ones(2, 7), rtol=0, atol=1e-5)
    torch.testing.assert_close(z.sum(dim=2), torch.ones(2, 45), rtol=0, atol=1e-5)
    assert (z >= 0).all()


def test_no_autograd_even_when_inputs_require_grad():
    x, mu = inputs(2, 5, 37, 3)
    x.requires_grad_(True)
    mu.requires_grad_(True)
    mu_f, z = em.em_iterations_fused(x, mu, 3, **SMALL)
    assert not mu_f.requires_grad and not z.requires_grad
    assert mu_f.grad_fn is None and z.grad_fn is None
    assert torch.is_grad_enabled()  # the no_grad scope did not leak


def test_split_reduction_is_bitwise_reproducible():
    x, mu = inputs(2, 19, 45, 7)
    a = em.em_iterations_fused(x, mu, 3, deterministic=True, **SMALL)
    b = em.em_iterations_fused(x, mu, 3, deterministic=True, **SMALL)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


@pytest.mark.parametrize("torch_deterministic", [False, True])
def test_deterministic_default_follows_torch(torch_deterministic, monkeypatch):
    launches = []
    reduce_kernel = em._em_reduce

    class Spy:
        def __getitem__(self, grid):
            launches.append(grid)
            return reduce_kernel[grid]

    monkeypatch.setattr(em, "_em_reduce", Spy())
    monkeypatch.setattr(torch, "are_deterministic_algorithms_enabled", lambda: torch_deterministic)
    x, mu = inputs(1, 5, 37, 3)
    assert_matches(em.em_iterations_fused(x, mu, 2, **SMALL), reference.em_iterations(x, mu, 2), 1e-4)
    assert len(launches) == (2 if torch_deterministic else 0)  # the split-N reduce, once per iteration


def test_input_checks():
    x, mu = inputs(2, 5, 37, 3)
    with pytest.raises(ValueError, match="T >= 1"):
        em.em_iterations_fused(x, mu, 0)
    with pytest.raises(ValueError, match="does not fit"):
        em.em_iterations_fused(x, mu[:, :4], 1)
    with pytest.raises(ValueError, match="share a dtype"):
        em.em_iterations_fused(x, mu.double(), 1)
    with pytest.raises(ValueError, match="power of two"):
        em.em_iterations_fused(x, mu, 1, block_n=24)
    with pytest.raises(ValueError, match="precision"):
        em.em_iterations_fused(x, mu, 1, precision="fp8")


def test_empty_pixels_follow_the_reference():
    x, mu = inputs(2, 5, 0, 3)
    mu_f, z = em.em_iterations_fused(x, mu, 2)
    mu_r, z_r = reference.em_iterations(x, mu, 2)
    assert torch.equal(mu_f, mu_r) and z.shape == z_r.shape == (2, 0, 3)


def test_bytes_moved():
    B, C, N, K, T = 2, 512, 128 * 256, 64, 3
    assert em.bytes_moved(B, C, N, K, T, 4) == 4 * (T * (B * C * N + 2 * B * C * K) + B * N * K)
    assert em.bytes_moved(B, C, N, K, 1, 2) * 2 == em.bytes_moved(B, C, N, K, 1, 4)


# --- dispatch -------------------------------------------------------------------------------

@pytest.fixture
def counted(monkeypatch):
    """Count calls to the kernel entry point and to the reference (both still run)."""
    counts = {"fused": 0, "reference": 0}
    fused, plain = em.em_iterations_fused, em.em_iterations

    def count_fused(*a, **kw):
        counts["fused"] += 1
        return fused(*a, **kw)

    def count_reference(*a, **kw):
        counts["reference"] += 1
        return plain(*a, **kw)

    monkeypatch.setattr(em, "em_iterations_fused", count_fused)
    monkeypatch.setattr(em, "em_iterations", count_reference)
    return counts


@pytest.mark.parametrize("mode, expect", [("reference", "reference"), ("triton", "fused"),
                                          ("auto", "reference")])
def test_dispatch(mode, expect, counted):
    x, mu = inputs(2, 5, 37, 3)  # CPU tensors: auto picks the reference
    with dispatch.backend(mode):
        got = em.em_attention_iterations(x, mu, 2)
    assert counted == {"fused": int(expect == "fused"), "reference": int(expect == "reference")}
    assert_matches(got, reference.em_iterations(x, mu, 2), 1e-4)


def test_dispatch_takes_the_reference_when_gradients_are_needed(counted):
    x, mu = inputs(2, 5, 37, 3)
    mu.requires_grad_(True)
    with dispatch.backend("triton"):
        mu_out, _ = em.em_attention_iterations(x, mu, 2)
        assert counted == {"fused": 0, "reference": 1}
        assert mu_out.requires_grad
        with torch.no_grad():
            em.em_attention_iterations(x, mu, 2)
    assert counted == {"fused": 1, "reference": 1}


@pytest.mark.parametrize("variant", [{"gather": "softmax"}, {"descriptor_norm": "none"},
                                     {"gather": "softmax", "descriptor_norm": "none"}])
def test_dispatch_takes_the_reference_for_variants_the_kernel_lacks(variant, counted):
    # A2Net's gathering and un-normalised bases are not in the kernel: even a forced 'triton'
    # backend must compute them with the reference, and get the variant's values, not EMANet's.
    assert not em.kernel_implements(**variant) and em.kernel_implements()
    x, mu = inputs(2, 5, 37, 3)
    with dispatch.backend("triton"), torch.no_grad():
        got = em.em_attention_iterations(x, mu, 2, **variant)
    assert counted == {"fused": 0, "reference": 1}
    want = reference.em_iterations(x, mu, 2, **variant)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.allclose(got[0], reference.em_iterations(x, mu, 2)[0], atol=1e-3)


def test_ema_block_variant_runs_under_a_forced_kernel(counted):
    # The block passes its switches down: with gather='softmax' the (no-grad) moving-average
    # iterations reach the reference, with the defaults the kernel.
    block = EMABlock(8, K=4, T=2, T_eval=2, gather="softmax").eval()
    x = torch.randn(2, 8, 5, 6)
    with dispatch.backend("triton"), torch.no_grad():
        block(x)
        assert counted == {"fused": 0, "reference": 1}
        EMABlock(8, K=4, T=2, T_eval=2).eval()(x)
    assert counted == {"fused": 1, "reference": 1}
