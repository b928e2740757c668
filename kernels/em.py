"""Fused EM-attention iterations (EMANet) in Triton.

One algorithm in one module (the pass, reduce and finalize kernels, their launch, and the
dispatch to the PyTorch reference), so the module runs past 400 lines: the kernels share their
buffer layout and must change together.

What it computes
----------------
Exactly ``ablate_kernels.reference.em_iterations(x, mu, T)`` without autograd: ``x`` (B, C, N)
features, ``mu`` (B, C, K) bases (a batch of 1 broadcasts, as ``@`` does in the reference);
``T >= 1`` times

* E-step ``z = softmax_K(x^T mu)``                              (B, N, K)
* M-step ``mu = l2_normalise_C(x @ (z / (1e-6 + sum_N z)))``    (B, C, K),
  with ``l2_normalise(t) = t / (1e-6 + ||t||)`` (EMANet's epsilon in both places),

returning the last ``(mu, z)``; ``z`` is the last E-step's responsibilities (computed from the
bases *before* the last M-step, as in the reference).

Algorithm
---------
Column scaling commutes with the product, ``x @ (z / (eps + s)) = (x @ z) / (eps + s)`` with
``s = sum_N z``, so one pass over the pixels gives everything the M-step needs. Per iteration:

1. ``_em_pass`` -- grid ``(S, B)``; program ``(s, b)`` takes the pixel blocks
   ``s, s + S, s + 2S, ...`` of ``BLOCK_N`` pixels (with atomics ``S`` is the number of blocks,
   so each program takes one). For a block it

   * loops over C in ``BLOCK_C`` chunks accumulating the logits ``x_blk^T mu`` (BLOCK_N, K)
     with ``tl.dot`` (K padded to a power of two >= 16 and masked to ``-inf``);
   * takes the softmax over K in registers (fp32 or fp64), zeroes the rows of padded pixels,
     and on the last iteration only stores this ``z`` block;
   * loops over C again (chunks in reverse order, so the most recently loaded ones, the most
     likely to still sit in L1/L2, come first) accumulating ``x_chunk @ z_blk`` (BLOCK_C, K)
     and ``sum_n z_blk`` (K) into fp32 (fp64 for float64) accumulators.

   The second C loop re-reads the x tile this program has just read (C x BLOCK_N elements,
   256 KiB at C=512, BLOCK_N=128, fp32); on a GPU that re-read is served by L1/L2, so DRAM
   sees every pixel once per iteration -- that is the fusion. Holding the whole tile in
   registers instead would force BLOCK_N down to ~32 at C=512 and quadruple the reduction
   traffic below, which costs more.

2. Reduction of the (C, K) and (K,) partial sums over the pixel blocks, one of two ways:

   * **atomics** (default): every block ``tl.atomic_add`` s (relaxed) its partials into one
     zeroed (B, C, K) + (B, K) buffer. Cheapest: a block of BLOCK_N pixels reads
     C*BLOCK_N x elements and issues C*K atomic adds, so K/BLOCK_N atomics per element read
     (1/2 at K=64 with the GPU defaults), all resolved in L2 with no return traffic. But the
     floating-point summation order depends on scheduling, so results can differ in the last
     bits from run to run.
   * **deterministic** (``deterministic=True``, or by default when
     ``torch.are_deterministic_algorithms_enabled()``): a two-stage split-N reduction. Program
     ``s`` owns a private slice ``P[b, s]`` (C, K) and read-modify-writes it for each of its
     blocks (no atomics, fixed order); ``_em_reduce`` (grid (B, C*K_pad / 1024)) then sums
     the ``S`` slices in order. ``S = min(#blocks, max(4, 256 // B))`` (about 256 programs),
     fixed by the shape, so the result is bitwise reproducible for a given shape and config.
     Extra memory ``B * S * C * K`` accumulator elements (32 MiB at C=512, K=64, fp32) and
     their read-modify-write traffic, mostly in L2.

3. ``_em_finalize`` -- grid ``(B, K-blocks)``: divides the summed ``x z`` by ``1e-6 + s``,
   takes the L2 norm over C, divides by ``1e-6 + norm`` and writes the new bases (in ``x``'s
   dtype, like the reference). It reads C*K elements twice; negligible.

Memory
------
Outputs ``mu`` (B, C, K) and ``z`` (B, N, K) in ``x``'s dtype; one more (B, C, K) bases buffer
for the ping-pong between iterations; accumulators (B, C, K) + (B, K) in fp32/fp64 (plus the
split-N slices in deterministic mode; K is padded to K_pad in the accumulators). No (B, N, K) intermediate besides the returned ``z``,
and ``z`` is written only once (last iteration). Kernel launches per iteration: a memset, the
pass, (the reduce,) the finalize.

Precision and dtypes
--------------------
float32, float64, float16 and bfloat16 (softmax, accumulation and normalisation in fp32, in
fp64 for float64; the bases between iterations and the outputs are stored in ``x``'s dtype,
as the reference keeps them). For float32 the products use ``tl.dot`` with
``input_precision``: ``"tf32x3"`` by default (three TF32 tensor-core products, close to fp32
accuracy), ``"tf32"`` when PyTorch's ``torch.get_float32_matmul_precision()`` is not
``"highest"`` (then PyTorch's own matmuls use TF32 too), or whatever ``precision=`` says
(``"ieee"`` for plain fp32 FMAs). float64 always uses ``"ieee"``. Under ``TRITON_INTERPRET=1``
(how the tests run on a CPU) ``tl.dot`` is a numpy matmul in the operand dtype whatever the
precision, and float64 runs there too; its ``tl.dot`` gives garbage for bfloat16 operands
(numpy has no bfloat16), so under the interpreter bfloat16 tiles are upcast to fp32 for the
products (on a GPU they go to the tensor cores as bfloat16).

GPU tuning knobs (``block_n``, ``block_c``, ``num_warps``) are keyword arguments; the defaults
(BLOCK_N = min(128, 8192 / K_pad), BLOCK_C = 32, 8 warps for 8192-element logit tiles) are a
reasoned starting point, not measured on a GPU here.

Dispatch
--------
:func:`em_attention_iterations` takes the kernel when ``dispatch.use_triton(x, mu)`` says so
and the reference otherwise; since the kernel has no backward, a call that needs gradients
(grad mode on and an input requiring grad: EMANet's ``bases: learned`` variant) always takes
the reference; so does a variant the kernel does not implement (A2Net's gathering,
``gather='softmax'``, or bases without the L2 normalisation: :func:`kernel_implements`).
EMANet's own (moving-average) iterations run under ``torch.no_grad``.
"""
from __future__ import annotations

import torch

from . import dispatch
from .reference import EPS, em_iterations

try:
    import triton
    import triton.language as tl

    _jit = triton.jit
except ImportError:  # Triton is Linux-only; em_attention_iterations then runs the reference
    triton = tl = None

    def _jit(fn):
        return fn

__all__ = ["em_iterations_fused", "em_attention_iterations", "kernel_implements", "bytes_moved", "EPS"]

# Output allocator; tests replace it with one that pre-fills NaN so an unwritten element shows.
_empty = torch.empty

_SUPPORTED = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TL_DTYPE = dict(zip(_SUPPORTED, (tl.float32, tl.float64, tl.float16, tl.bfloat16))) if tl else {}


def bytes_moved(B: int, C: int, N: int, K: int, T: int, dtype_bytes: int) -> int:
    """Minimum bytes T fused EM iterations must move between DRAM and the chip.

    Each iteration must read every pixel once (the E-step of iteration t+1 needs the bases of
    the M-step of iteration t, which depend on all pixels), read the current bases and write
    the new ones; the responsibilities z are written once, after the last E-step:
    ``T * (B*C*N + 2*B*C*K) + B*N*K`` elements of ``dtype_bytes`` each. Accumulator traffic
    (which can stay in L2) is not counted: this is a floor, for a bandwidth-bound estimate
    ``bytes_moved(...) / peak_bandwidth``.
    """
    for name, v in (("B", B), ("C", C), ("N", N), ("K", K), ("T", T), ("dtype_bytes", dtype_bytes)):
        if v < 0:
            raise ValueError(f"{name} must be >= 0, got {v}")
    return (T * (B * C * N + 2 * B * C * K) + B * N * K) * dtype_bytes


# one Triton kernel (step 1 of the module docstring: logits, softmax over K, the x z sums): not split
@_jit
def _em_pass(x_ptr, mu_ptr, z_ptr, acc_ptr, zs_ptr,
             C, N, K, n_blocks, n_splits,
             sxb, sxc, sxn, smb, smc, smk,
             acc_sb, acc_ss, zs_sb, zs_ss,
             BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
             WRITE_Z: tl.constexpr, USE_ATOMIC: tl.constexpr,
             PRECISION: tl.constexpr, ACC_DT: tl.constexpr, DOT_DT: tl.constexpr):
    s = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    x_base = x_ptr + b * sxb
    mu_base = mu_ptr + b * smb
    acc_base = acc_ptr + b * acc_sb + s * acc_ss
    zs_base = zs_ptr + b * zs_sb + s * zs_ss

    offs_k = tl.arange(0, BLOCK_K)
    k_mask = offs_k < K
    arange_c = tl.arange(0, BLOCK_C)
    n_c = tl.cdiv(C, BLOCK_C)

    for blk in range(s, n_blocks, n_splits):
        offs_n = blk * BLOCK_N + tl.arange(0, BLOCK_N)
        n_mask = offs_n < N

        # E-step logits x_blk^T mu, (BLOCK_N, BLOCK_K), over C in chunks.
        logits = tl.zeros((BLOCK_N, BLOCK_K), dtype=ACC_DT)
        for ci in range(n_c):
            offs_c = ci * BLOCK_C + arange_c
            c_mask = offs_c < C
            xt = tl.load(x_base + offs_c[:, None] * sxc + offs_n[None, :] * sxn,
                         mask=c_mask[:, None] & n_mask[None, :], other=0.0).to(DOT_DT)
            mt = tl.load(mu_base + offs_c[:, None] * smc + offs_k[None, :] * smk,
                         mask=c_mask[:, None] & k_mask[None, :], other=0.0).to(DOT_DT)
            logits = tl.dot(tl.trans(xt), mt, logits, input_precision=PRECISION, out_dtype=ACC_DT)

        # Softmax over K in registers; padded bases get -inf, padded pixels a zero row.
        logits = tl.where(k_mask[None, :], logits, float("-inf"))
        row_max = tl.max(logits, axis=1)
        p = tl.exp(logits - row_max[:, None])
        z = p / tl.sum(p, axis=1)[:, None]
        z = tl.where(n_mask[:, None], z, 0.0)

        if WRITE_Z:
            z_ptrs = z_ptr + b * N * K + offs_n[:, None] * K + offs_k[None, :]
            tl.store(z_ptrs, z.to(z_ptr.dtype.element_ty), mask=n_mask[:, None] & k_mask[None, :])

        zsum = tl.sum(z, axis=0)
        if USE_ATOMIC:
            tl.atomic_add(zs_base + offs_k, zsum, mask=k_mask, sem="relaxed")
        else:
            zs_old = tl.load(zs_base + offs_k, mask=k_mask, other=0.0)
            tl.store(zs_base + offs_k, zs_old + zsum, mask=k_mask)

        # M-step partial x_blk @ z_blk, (BLOCK_C, BLOCK_K) per chunk; chunks in reverse order
        # so the ones just loaded above (most likely still cached) are re-read first.
        zd = z.to(DOT_DT)
        for cj in range(n_c):
            ci = n_c - 1 - cj
            offs_c = ci * BLOCK_C + arange_c
            c_mask = offs_c < C
            xc = tl.load(x_base + offs_c[:, None] * sxc + offs_n[None, :] * sxn,
                         mask=c_mask[:, None] & n_mask[None, :], other=0.0).to(DOT_DT)
            part = tl.dot(xc, zd, input_precision=PRECISION, out_dtype=ACC_DT)
            a_ptrs = acc_base + offs_c[:, None] * BLOCK_K + offs_k[None, :]
            a_mask = c_mask[:, None] & k_mask[None, :]
            if USE_ATOMIC:
                tl.atomic_add(a_ptrs, part, mask=a_mask, sem="relaxed")
            else:
                old = tl.load(a_ptrs, mask=a_mask, other=0.0)
                tl.store(a_ptrs, old + part, mask=a_mask)


@_jit
def _em_reduce(part_ptr, acc_ptr, CK, n_splits, p_sb, p_ss, a_sb,
               BLOCK: tl.constexpr):
    """acc[b] = sum_s part[b, s] over the flattened (C, K_pad) slices, in order of s."""
    b = tl.program_id(0).to(tl.int64)
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < CK
    total = tl.load(part_ptr + b * p_sb + offs, mask=mask, other=0.0)
    for s in range(1, n_splits):
        total += tl.load(part_ptr + b * p_sb + s * p_ss + offs, mask=mask, other=0.0)
    tl.store(acc_ptr + b * a_sb + offs, total, mask=mask)


@_jit
def _em_finalize(acc_ptr, zs_ptr, mu_ptr, C, K, n_zs, eps,
                 acc_sb, zs_sb, zs_ss,
                 ACC_K: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr):
    """mu[b, :, k] = v / (eps + ||v||), v = acc[b, :, k] / (eps + sum_s zs[b, s, k])."""
    b = tl.program_id(0).to(tl.int64)
    offs_k = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    k_mask = offs_k < K
    s = tl.load(zs_ptr + b * zs_sb + offs_k, mask=k_mask, other=0.0)
    for g in range(1, n_zs):
        s += tl.load(zs_ptr + b * zs_sb + g * zs_ss + offs_k, mask=k_mask, other=0.0)
    denom = eps + s
    arange_c = tl.arange(0, BLOCK_C)
    sq = tl.zeros((BLOCK_K,), dtype=s.dtype)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + arange_c
        m = (offs_c < C)[:, None] & k_mask[None, :]
        v = tl.load(acc_ptr + b * acc_sb + offs_c[:, None] * ACC_K + offs_k[None, :], mask=m, other=0.0)
        v = v / denom[None, :]
        sq += tl.sum(v * v, axis=0)
    scale = eps + tl.sqrt(sq)
    for c0 in range(0, C, BLOCK_C):
        offs_c = c0 + arange_c
        m = (offs_c < C)[:, None] & k_mask[None, :]
        v = tl.load(acc_ptr + b * acc_sb + offs_c[:, None] * ACC_K + offs_k[None, :], mask=m, other=0.0)
        v = (v / denom[None, :]) / scale[None, :]
        tl.store(mu_ptr + b * C * K + offs_c[:, None] * K + offs_k[None, :],
                 v.to(mu_ptr.dtype.element_ty), mask=m)


def _precision(dtype: torch.dtype, precision: str | None) -> str:
    if precision is not None and precision not in ("tf32", "tf32x3", "ieee"):
        raise ValueError(f"precision must be 'tf32', 'tf32x3' or 'ieee', got {precision!r}")
    if dtype == torch.float64:
        return "ieee"
    if dtype != torch.float32:
        return "tf32"  # ignored by tl.dot for 16-bit operands
    if precision is not None:
        return precision
    return "tf32x3" if torch.get_float32_matmul_precision() == "highest" else "tf32"


def _check(x: torch.Tensor, mu: torch.Tensor, T: int) -> None:
    if triton is None:
        raise RuntimeError("em_iterations_fused needs Triton, which does not import here; use em_attention_iterations")
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ValueError(f"EM needs an integer T >= 1 iterations, got {T!r}")
    if x.dim() != 3 or mu.dim() != 3:
        raise ValueError(f"x must be (B, C, N) and mu (B, C, K); got {tuple(x.shape)} and {tuple(mu.shape)}")
    if mu.shape[1] != x.shape[1] or mu.shape[0] not in (1, x.shape[0]):
        raise ValueError(f"mu {tuple(mu.shape)} does not fit x {tuple(x.shape)}: need (B or 1, C, K)")
    if x.dtype != mu.dtype:
        raise ValueError(f"x and mu must share a dtype, got {x.dtype} and {mu.dtype}")
    if x.dtype not in _SUPPORTED:
        raise TypeError(f"em_iterations_fused supports {', '.join(map(str, _SUPPORTED))}; got {x.dtype}")
    if x.device != mu.device:
        raise ValueError(f"x and mu are on different devices: {x.device} and {mu.device}")
    if not x.is_cuda and not dispatch.interpreting():
        raise RuntimeError("em_iterations_fused on CPU tensors needs TRITON_INTERPRET=1 (Triton's interpreter)")


def _dtypes(dt: torch.dtype, precision: str | None):
    """The accumulators' torch and Triton dtypes, ``tl.dot``'s input precision and operand dtype."""
    acc_dt = torch.float64 if dt == torch.float64 else torch.float32
    tl_acc = tl.float64 if dt == torch.float64 else tl.float32
    prec = _precision(dt, precision)
    tl_dot = _TL_DTYPE[dt]
    if dt == torch.bfloat16 and dispatch.interpreting():
        tl_dot = tl.float32  # the interpreter's tl.dot mishandles bfloat16 operands (numpy has no bf16)
    return acc_dt, tl_acc, prec, tl_dot


def _launch_config(K: int, block_n: int | None, block_c: int | None,
                   num_warps: int | None) -> tuple[int, int, int, int]:
    """BLOCK_K (K padded), BLOCK_N, BLOCK_C and the warps: the caller's or the module docstring's defaults."""
    BLOCK_K = max(16, triton.next_power_of_2(K))
    BLOCK_N = block_n if block_n is not None else max(16, min(128, 8192 // BLOCK_K))
    BLOCK_C = block_c if block_c is not None else 32
    for name, v in (("block_n", BLOCK_N), ("block_c", BLOCK_C)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= 16, got {v}")
    warps = num_warps if num_warps is not None else (8 if BLOCK_N * BLOCK_K >= 8192 else 4)
    return BLOCK_K, BLOCK_N, BLOCK_C, warps


def _accumulators(B: int, C: int, BLOCK_K: int, n_blocks: int, deterministic: bool, dev, acc_dt):
    """``(S, part, zs, acc)``: the number of pass programs per image, the per-program partial sums
    (split-N slices when deterministic, else the one zeroed buffer the atomics add into), the
    partial ``sum_N z`` and the summed ``x z`` the finalize reads."""
    if deterministic:
        S = min(n_blocks, max(4, 256 // B))
        part = torch.zeros(B, S, C, BLOCK_K, device=dev, dtype=acc_dt)
        zs = torch.zeros(B, S, BLOCK_K, device=dev, dtype=acc_dt)
        acc = torch.empty(B, C, BLOCK_K, device=dev, dtype=acc_dt)
    else:
        S = n_blocks
        part = acc = torch.zeros(B, 1, C, BLOCK_K, device=dev, dtype=acc_dt)
        zs = torch.zeros(B, 1, BLOCK_K, device=dev, dtype=acc_dt)
    return S, part, zs, acc


def _reduce_and_finalize(part, acc, zs, mu_next, C: int, K: int, S: int, BLOCK_K: int, deterministic: bool) -> None:
    """Steps 2 (the split-N reduction, deterministic mode only) and 3 (the new bases) of an iteration."""
    B = acc.shape[0]
    if deterministic:
        CK, RED_BLOCK = C * BLOCK_K, 1024
        _em_reduce[(B, triton.cdiv(CK, RED_BLOCK))](
            part, acc, CK, S, part.stride(0), part.stride(1), acc.stride(0), BLOCK=RED_BLOCK)
    FIN_K, FIN_C = 16, min(128, triton.next_power_of_2(C))
    _em_finalize[(B, triton.cdiv(K, FIN_K))](
        acc, zs, mu_next, C, K, zs.shape[1], EPS,
        acc.stride(0), zs.stride(0), zs.stride(1),
        ACC_K=BLOCK_K, BLOCK_C=FIN_C, BLOCK_K=FIN_K)


@torch.no_grad()
def em_iterations_fused(x: torch.Tensor, mu: torch.Tensor, T: int, *,
                        deterministic: bool | None = None, precision: str | None = None,
                        block_n: int | None = None, block_c: int | None = None,
                        num_warps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``T`` fused EM iterations; returns ``(mu, z)``: (B, C, K) unit-norm bases and the last
    E-step's (B, N, K) responsibilities, in ``x``'s dtype, not requiring grad.

    ``deterministic`` (default: ``torch.are_deterministic_algorithms_enabled()``) picks the
    split-N reduction over atomics; ``precision`` is ``tl.dot``'s float32 input precision (see
    the module docstring); ``block_n`` / ``block_c`` (powers of two >= 16) and ``num_warps``
    override the launch configuration.
    """
    _check(x, mu, T)
    B, C, N = x.shape
    K = mu.shape[2]
    if B == 0 or C == 0 or N == 0 or K == 0:  # nothing for a kernel to do; keep the reference's values
        mu_out, z = em_iterations(x, mu.expand(B, C, K), T)
        return mu_out.detach(), z.detach()
    if mu.shape[0] != B:
        mu = mu.expand(B, C, K)
    if deterministic is None:
        deterministic = torch.are_deterministic_algorithms_enabled()
    dev, dt = x.device, x.dtype
    acc_dt, tl_acc, prec, tl_dot = _dtypes(dt, precision)
    BLOCK_K, BLOCK_N, BLOCK_C, warps = _launch_config(K, block_n, block_c, num_warps)
    n_blocks = triton.cdiv(N, BLOCK_N)
    S, part, zs, acc = _accumulators(B, C, BLOCK_K, n_blocks, deterministic, dev, acc_dt)
    z = _empty((B, N, K), device=dev, dtype=dt)
    bufs = [_empty((B, C, K), device=dev, dtype=dt) for _ in range(min(T, 2))]

    mu_cur = mu
    for t in range(T):
        if t > 0:
            part.zero_()
            zs.zero_()
        mu_next = bufs[t % len(bufs)]
        _em_pass[(S, B)](
            x, mu_cur, z, part, zs,
            C, N, K, n_blocks, S,
            x.stride(0), x.stride(1), x.stride(2), mu_cur.stride(0), mu_cur.stride(1), mu_cur.stride(2),
            part.stride(0), part.stride(1) if deterministic else 0,
            zs.stride(0), zs.stride(1) if deterministic else 0,
            BLOCK_C=BLOCK_C, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
            WRITE_Z=(t == T - 1), USE_ATOMIC=not deterministic,
            PRECISION=prec, ACC_DT=tl_acc, DOT_DT=tl_dot, num_warps=warps)
        _reduce_and_finalize(part, acc, zs, mu_next, C, K, S, BLOCK_K, deterministic)
        mu_cur = mu_next
    return mu_cur, z


def kernel_implements(gather: str = "em", descriptor_norm: str = "l2") -> bool:
    """True for the EM variants the kernel computes: EMANet's M-step (``gather='em'``, L1 over
    the pixels of the softmax over K, and ``descriptor_norm='l2'``). A2Net's gathering (softmax
    over the pixels) and un-normalised bases are left to the reference."""
    return gather == "em" and descriptor_norm == "l2"


def em_attention_iterations(x: torch.Tensor, mu: torch.Tensor, T: int, *, gather: str = "em",
                            descriptor_norm: str = "l2") -> tuple[torch.Tensor, torch.Tensor]:
    """EM iterations through the kernel when :func:`dispatch.use_triton` says so, else the reference.

    The kernel has no backward: a call that needs gradients (grad mode on and ``x`` or ``mu``
    requiring grad, e.g. EMANet's ``bases: learned`` variant) always takes the reference,
    which autograd differentiates. So does a variant the kernel does not implement
    (:func:`kernel_implements`), whatever the backend setting: forcing ``triton`` forces the
    kernel where it applies, it does not turn these into errors.
    """
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or mu.requires_grad)
    if not needs_grad and kernel_implements(gather, descriptor_norm) and dispatch.use_triton(x, mu):
        return em_iterations_fused(x, mu, T)
    return em_iterations(x, mu, T, gather, descriptor_norm)
