"""Criss-cross attention (CCNet) as Triton kernels: forward and backward, flash style.

One algorithm in one module (its forward kernel, the backward kernels that recompute it, the
autograd function that ties them and the dispatch to the PyTorch reference), so the module runs
past 400 lines: the kernels share their block layout and must change together.

What it computes
----------------
Exactly :func:`ablate_kernels.reference.criss_cross_reference`. With ``q``, ``k`` of shape
(B, d, H, W) and ``v`` of shape (B, c, H, W), every pixel p = (h, w) scores its query against
the keys of its *band*: its column (i, w) for every row i != h and its row (h, j) for every
column j (the centre once, in the row part), H + W - 1 entries. One softmax runs over the band
(no 1/sqrt(d) scale, as in CCNet) and weights the values of the same pixels::

    s[p, u]  = q[:, p] . k[:, u]                         u in band(p)
    lse[p]   = log sum_{u in band(p)} exp(s[p, u])
    out[:, p] = sum_{u in band(p)} exp(s[p, u] - lse[p]) v[:, u]

Memory
------
Nothing of band size is ever stored: the forward keeps two (B, H, W) arrays beside the output
(the row part's log-sum-exp, a temporary, and the band's log-sum-exp ``lse``, saved for the
backward), the backward one more (``delta``). Beyond inputs, output and gradients the memory is
O(B*H*W), against the reference's O(B*H*W*(H+W)) band of scores and probabilities.

Algorithm
---------
The band of a pixel is the union of two 1-D attentions along *lines*: its row (a sequence of
length W) and its column (length H, centre excluded). One generic kernel does attention
within lines; a line is addressed by two pixel strides, so the same kernel runs rows
(``s_line = W, s_pos = 1``) and columns (``s_line = 1, s_pos = W``) with no transposed copy.
Within a line it is ordinary attention, so the score and value products are real matrix
products (``tl.dot``, blocks of at least 16).

Forward (two launches):

1. row pass, grid (H rows, query blocks x channel blocks, B): each program holds a block of
   BLOCK_M pixels of one row and BLOCK_C value channels, streams the row's keys and values in
   blocks of BLOCK_N with an online softmax (running max, running sum, rescaled accumulator)
   and writes the row-normalised output into ``out`` and the row's log-sum-exp into a
   (B, H, W) temporary.
2. column pass, grid (W columns, query blocks x channel blocks, B), the centre masked: the
   same online softmax over the column, then the two partial softmaxes are merged exactly,
   ``m = max(m_col, lse_row)``, ``den = l_col e^(m_col - m) + e^(lse_row - m)``,
   ``out = (acc_col e^(m_col - m) + out_row e^(lse_row - m)) / den``, ``lse = m + log den``,
   reading and rewriting the same ``out`` tile (each program owns its tile: no race).
   Columns are the grid's fastest axis, so programs running together read neighbouring
   columns and share cache sectors for the strided (stride W) column loads.

The scores are recomputed once per channel block so that a program's accumulator stays at
BLOCK_M x BLOCK_C: ``d / BLOCK_C`` extra products (1/2 for CCNet's d = C/8 = 64 at BLOCK_C =
128), and q, k are re-read once per channel block (mostly from L2).

Backward (five launches), with ``P = exp(s - lse)`` recomputed from q, k and the saved ``lse``:

1. ``delta[p] = sum_c dout[c, p] out[c, p]`` (= sum_u P[p, u] dP[p, u]), one (B, H, W) array;
   it depends on the whole band, so it is computed once, and after it the two directions are
   independent.
2. per direction, grid (lines, key blocks, B): a program owns BLOCK_N keys of one line, loops
   over the line's query blocks, builds ``dP = dout . v`` over all channels in blocks,
   ``dS = P (dP - delta)``, accumulates ``dk += dS^T q`` in registers and adds
   ``dq += dS k`` into the query rows with atomics (several key blocks share a query).
3. per direction, grid (lines, key blocks x channel blocks, B): ``dv += P^T dout`` over the
   line's query blocks, ``P`` recomputed.

The row direction stores dk and dv, the column direction adds to them (kernels run in order);
dq starts at zero. Because of the float atomics, dq's last bits depend on the order in which
programs finish (dk, dv and the forward are deterministic).

Bytes moved
-----------
:func:`bytes_moved` is the floor for any implementation that keeps O(1) numbers per pixel:
forward reads q, k, v and writes out and lse; backward reads q, k, v, out, dout and lse and
writes dq, dk, dv, i.e. ``(6d + 6c + 2) * B*H*W * dtype_bytes``. These kernels move more: each
pass reads q, k, v again (two directions), ``out`` is written twice and read once in the
forward, dq goes through atomics, and the column pass reads with stride W (its traffic lands
in L2 rather than DRAM when neighbouring columns run together).

FLOPs, per band entry (B H W (H+W-1) of them) and counting a multiply-add as 2: the minimum is
``2 (d + c)`` forward and ``2 (3d + 2c)`` backward (s, dP, dS^T q, dS k, P^T dout). These
kernels add the score recomputation, ``2 d`` per channel block in the forward and in the dv
kernel, and the padding of lines to whole blocks.

Precision
---------
float64 computes in float64 (``tl.dot`` with ``input_precision="ieee"``). float32 products go
through tensor cores as three-pass TF32 (``"tf32x3"``, float32-level accuracy) unless torch's own
switch allows TF32 for matmuls (``torch.backends.cuda.matmul.allow_tf32`` /
``torch.set_float32_matmul_precision("high")``), in which case they use plain ``"tf32"`` like the
einsum reference would; :data:`FP32_DOT_PRECISION` overrides both ("ieee" for exact float32 on
the FMA units, much slower). float16 and bfloat16 inputs are computed in float32 and cast back.
Softmax statistics, accumulators and ``lse`` are kept in the compute dtype.

Launch parameters (:func:`_config`) are chosen to compile for sm_90 without register spills
(checked with ptxas, no GPU at hand), not yet timed on one: lines in blocks of 32 (16 for short
lines or d > 64), channels in blocks of up to 128, four warps.
"""
from __future__ import annotations

import torch

from . import dispatch
from .reference import criss_cross_reference

try:
    import triton
    import triton.language as tl
except ImportError:  # the reference path still works; dispatch.use_triton says no kernel
    triton = None
    tl = None

__all__ = ["criss_cross", "criss_cross_attention", "bytes_moved", "FP32_DOT_PRECISION"]

#: ``input_precision`` of float32 ``tl.dot``: None (the default) follows torch's TF32 switch
#: ("tf32" when it allows TF32 matmuls, else "tf32x3"); or force "ieee", "tf32x3" or "tf32".
FP32_DOT_PRECISION: str | None = None

# Test hook: when True, every buffer the kernels should fully write is allocated filled with
# NaN instead of left uninitialised, so an element a kernel forgot shows up as NaN.
_POISON = False


def bytes_moved(B: int, d: int, c: int, H: int, W: int, dtype_bytes: int) -> int:
    """Minimum bytes a forward + backward must move (inputs read, results written once).

    forward: read q, k (d each), v (c); write out (c), lse (1)            -> 2d + 2c + 1
    backward: read q, k, v, out, dout, lse; write dq, dk (d each), dv (c)   -> 4d + 4c + 1
    per pixel and element size; ``(6d + 6c + 2) * B * H * W * dtype_bytes`` in all.
    """
    return (6 * d + 6 * c + 2) * B * H * W * dtype_bytes


if triton is not None:

    # one Triton kernel (attention within a line: online softmax over its keys, then the values): not split
    @triton.jit
    def _fwd_line_kernel(Q, K, V, Out, LsePrev, Lse,
                         D, C, L, HW, s_line, s_pos, n_cblocks,
                         EXCLUDE_CENTRE: tl.constexpr, MERGE: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                         BLOCK_C: tl.constexpr, PRECISION: tl.constexpr):
        """Attention within lines (rows or columns) for BLOCK_M queries x BLOCK_C channels.

        MERGE: combine with the partial softmax already in Out / LsePrev (the other direction).
        """
        line = tl.program_id(0)
        pid = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        pid_m = pid // n_cblocks
        pid_c = pid % n_cblocks

        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_m = offs_m < L
        mask_d = offs_d < D
        mask_c = offs_c < C
        pix_m = line * s_line + offs_m * s_pos

        Qb = Q + b * D * HW
        Kb = K + b * D * HW
        Vb = V + b * C * HW
        Ob = Out + b * C * HW

        q = tl.load(Qb + offs_d[None, :] * HW + pix_m[:, None],
                    mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [M, D]
        m_i = tl.full([BLOCK_M], float("-inf"), q.dtype)
        l_i = tl.zeros([BLOCK_M], q.dtype)
        acc = tl.zeros([BLOCK_M, BLOCK_C], q.dtype)

        for start_n in range(0, L, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            mask_n = offs_n < L
            pix_n = line * s_line + offs_n * s_pos
            kt = tl.load(Kb + offs_d[:, None] * HW + pix_n[None, :],
                         mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # [D, N]
            s = tl.dot(q, kt, input_precision=PRECISION)  # [M, N]
            valid = mask_n[None, :]
            if EXCLUDE_CENTRE:
                valid = valid & (offs_n[None, :] != offs_m[:, None])
            s = tl.where(valid, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            # a row with nothing valid yet keeps m = -inf: shift by 0 so no inf - inf appears
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            alpha = tl.exp(m_i - m_safe)
            p = tl.exp(s - m_safe[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            vb = tl.load(Vb + offs_c[None, :] * HW + pix_n[:, None],
                         mask=mask_n[:, None] & mask_c[None, :], other=0.0)  # [N, C]
            acc = acc * alpha[:, None] + tl.dot(p.to(vb.dtype), vb, input_precision=PRECISION)
            m_i = m_new

        o_ptrs = Ob + offs_c[None, :] * HW + pix_m[:, None]
        o_mask = mask_m[:, None] & mask_c[None, :]
        if MERGE:
            # the other direction's part is non-empty (it holds the centre): lse_prev is finite
            lse_prev = tl.load(LsePrev + b * HW + pix_m, mask=mask_m, other=0.0)
            o_prev = tl.load(o_ptrs, mask=o_mask, other=0.0)
            m = tl.maximum(m_i, lse_prev)
            scale_here = tl.exp(m_i - m)
            scale_prev = tl.exp(lse_prev - m)
            den = l_i * scale_here + scale_prev
            out = (acc * scale_here[:, None] + o_prev * scale_prev[:, None]) / den[:, None]
            lse = m + tl.log(den)
        else:
            out = acc / l_i[:, None]
            lse = m_i + tl.log(l_i)
        tl.store(o_ptrs, out, mask=o_mask)
        tl.store(Lse + b * HW + pix_m, lse, mask=mask_m & (pid_c == 0))

    @triton.jit
    def _bwd_delta_kernel(Out, DOut, Delta, C, HW,
                          BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
        """delta[b, p] = sum_c dout[b, c, p] * out[b, c, p]."""
        pid = tl.program_id(0)
        b = tl.program_id(1).to(tl.int64)
        offs_p = pid * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_p = offs_p < HW
        total = tl.zeros([BLOCK_P], Out.dtype.element_ty)
        for c0 in range(0, C, BLOCK_C):
            offs_c = c0 + tl.arange(0, BLOCK_C)
            ptrs = b * C * HW + offs_c[:, None] * HW + offs_p[None, :]
            mask = (offs_c[:, None] < C) & mask_p[None, :]
            o = tl.load(Out + ptrs, mask=mask, other=0.0)
            do = tl.load(DOut + ptrs, mask=mask, other=0.0)
            total += tl.sum(o * do, 0)
        tl.store(Delta + b * HW + offs_p, total, mask=mask_p)

    @triton.jit
    def _bwd_dkdq_line_kernel(Q, K, V, DOut, Lse, Delta, DQ, DK,
                              D, C, L, HW, s_line, s_pos,
                              EXCLUDE_CENTRE: tl.constexpr, ACCUMULATE: tl.constexpr,
                              BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                              BLOCK_C: tl.constexpr, PRECISION: tl.constexpr):
        """One line's BLOCK_N keys: dk in registers, dq of the line's queries by atomics."""
        line = tl.program_id(0)
        pid_n = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)

        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        mask_n = offs_n < L
        mask_d = offs_d < D
        pix_n = line * s_line + offs_n * s_pos

        Qb = Q + b * D * HW
        Kb = K + b * D * HW
        Vb = V + b * C * HW
        DOb = DOut + b * C * HW

        k = tl.load(Kb + offs_d[None, :] * HW + pix_n[:, None],
                    mask=mask_n[:, None] & mask_d[None, :], other=0.0)  # [N, D]
        dk = tl.zeros([BLOCK_N, BLOCK_D], k.dtype)

        for start_m in range(0, L, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < L
            pix_m = line * s_line + offs_m * s_pos
            q = tl.load(Qb + offs_d[None, :] * HW + pix_m[:, None],
                        mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [M, D]
            lse = tl.load(Lse + b * HW + pix_m, mask=mask_m, other=0.0)
            delta = tl.load(Delta + b * HW + pix_m, mask=mask_m, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PRECISION)  # [M, N]
            valid = mask_m[:, None] & mask_n[None, :]
            if EXCLUDE_CENTRE:
                valid = valid & (offs_m[:, None] != offs_n[None, :])
            p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
            dp = tl.zeros([BLOCK_M, BLOCK_N], k.dtype)
            for c0 in range(0, C, BLOCK_C):
                offs_c = c0 + tl.arange(0, BLOCK_C)
                mask_c = offs_c < C
                do = tl.load(DOb + offs_c[None, :] * HW + pix_m[:, None],
                             mask=mask_m[:, None] & mask_c[None, :], other=0.0)  # [M, C]
                vt = tl.load(Vb + offs_c[:, None] * HW + pix_n[None, :],
                             mask=mask_c[:, None] & mask_n[None, :], other=0.0)  # [C, N]
                dp += tl.dot(do, vt, input_precision=PRECISION)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds), q, input_precision=PRECISION)
            dq = tl.dot(ds, k, input_precision=PRECISION)  # [M, D]
            tl.atomic_add(DQ + b * D * HW + offs_d[None, :] * HW + pix_m[:, None], dq,
                          mask=mask_m[:, None] & mask_d[None, :], sem="relaxed")

        dk_ptrs = DK + b * D * HW + offs_d[None, :] * HW + pix_n[:, None]
        dk_mask = mask_n[:, None] & mask_d[None, :]
        if ACCUMULATE:
            dk += tl.load(dk_ptrs, mask=dk_mask, other=0.0)
        tl.store(dk_ptrs, dk, mask=dk_mask)

    @triton.jit
    def _bwd_dv_line_kernel(Q, K, DOut, Lse, DV,
                            D, C, L, HW, s_line, s_pos, n_cblocks,
                            EXCLUDE_CENTRE: tl.constexpr, ACCUMULATE: tl.constexpr,
                            BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                            BLOCK_C: tl.constexpr, PRECISION: tl.constexpr):
        """One line's BLOCK_N keys x BLOCK_C channels: dv = sum over the line's queries P^T dout."""
        line = tl.program_id(0)
        pid = tl.program_id(1)
        b = tl.program_id(2).to(tl.int64)
        pid_n = pid // n_cblocks
        pid_c = pid % n_cblocks

        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, BLOCK_D)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        mask_n = offs_n < L
        mask_d = offs_d < D
        mask_c = offs_c < C
        pix_n = line * s_line + offs_n * s_pos

        Qb = Q + b * D * HW
        Kb = K + b * D * HW
        DOb = DOut + b * C * HW

        kt = tl.load(Kb + offs_d[:, None] * HW + pix_n[None, :],
                     mask=mask_d[:, None] & mask_n[None, :], other=0.0)  # [D, N]
        dv = tl.zeros([BLOCK_N, BLOCK_C], kt.dtype)

        for start_m in range(0, L, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            mask_m = offs_m < L
            pix_m = line * s_line + offs_m * s_pos
            q = tl.load(Qb + offs_d[None, :] * HW + pix_m[:, None],
                        mask=mask_m[:, None] & mask_d[None, :], other=0.0)  # [M, D]
            lse = tl.load(Lse + b * HW + pix_m, mask=mask_m, other=0.0)
            s = tl.dot(q, kt, input_precision=PRECISION)  # [M, N]
            valid = mask_m[:, None] & mask_n[None, :]
            if EXCLUDE_CENTRE:
                valid = valid & (offs_m[:, None] != offs_n[None, :])
            p = tl.where(valid, tl.exp(s - lse[:, None]), 0.0)
            do = tl.load(DOb + offs_c[None, :] * HW + pix_m[:, None],
                         mask=mask_m[:, None] & mask_c[None, :], other=0.0)  # [M, C]
            dv += tl.dot(tl.trans(p), do, input_precision=PRECISION)

        dv_ptrs = DV + b * C * HW + offs_c[None, :] * HW + pix_n[:, None]
        dv_mask = mask_n[:, None] & mask_c[None, :]
        if ACCUMULATE:
            dv += tl.load(dv_ptrs, mask=dv_mask, other=0.0)
        tl.store(dv_ptrs, dv, mask=dv_mask)


# ------------------------------------------------------------------------------------------
# launchers
# ------------------------------------------------------------------------------------------

def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _config(kernel: str, L: int, d: int, c: int) -> dict:
    """Launch parameters of ``kernel`` ("fwd", "dkdq" or "dv") for lines of length L.

    Blocks are at least 16 (tl.dot's minimum). A bigger channel block means fewer score
    recomputations (d / BLOCK_C extra products) and fewer re-reads of q and k, but a bigger
    BLOCK_M x BLOCK_C accumulator; in "dkdq" BLOCK_C is only the chunk of the dP loop, kept
    small because that kernel holds the most tiles. Chosen so that, compiled for sm_90 at
    d = 64 with 3-pass TF32, ptxas reports no (fwd, dv) or a few bytes of (dkdq) register
    spills; not yet timed on a GPU.
    """
    block_d = max(16, _next_pow2(d))
    block_mn = 16 if (L <= 16 or block_d >= 128) else 32
    block_c = max(16, min(_next_pow2(c), 32 if kernel == "dkdq" else 128))
    return dict(BLOCK_M=block_mn, BLOCK_N=block_mn, BLOCK_D=block_d, BLOCK_C=block_c,
                num_warps=4, num_stages=1 if kernel == "dkdq" else 2)


def _precision(dtype: torch.dtype) -> str:
    if dtype != torch.float32:
        return "ieee"
    if FP32_DOT_PRECISION is not None:
        return FP32_DOT_PRECISION
    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "tf32x3"


def _alloc(shape, like: torch.Tensor) -> torch.Tensor:
    if _POISON:
        return torch.full(shape, float("nan"), dtype=like.dtype, device=like.device)
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _directions(H: int, W: int):
    """(name, line length, number of lines, s_line, s_pos, exclude centre) for rows then columns."""
    return (("row", W, H, W, 1, False), ("column", H, W, 1, W, True))


def _forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    B, d, H, W = q.shape
    c = v.shape[1]
    HW = H * W
    prec = _precision(q.dtype)
    out = _alloc((B, c, H, W), q)
    lse_row = _alloc((B, H, W), q)
    lse = _alloc((B, H, W), q)
    for name, L, n_lines, s_line, s_pos, exclude in _directions(H, W):
        cfg = _config("fwd", L, d, c)
        n_m = triton.cdiv(L, cfg["BLOCK_M"])
        n_c = triton.cdiv(c, cfg["BLOCK_C"])
        merge = name == "column"
        _fwd_line_kernel[(n_lines, n_m * n_c, B)](
            q, k, v, out, lse_row, lse if merge else lse_row,
            d, c, L, HW, s_line, s_pos, n_c,
            EXCLUDE_CENTRE=exclude, MERGE=merge, PRECISION=prec, **cfg)
    return out, lse


def _backward(q, k, v, out, lse, dout):
    B, d, H, W = q.shape
    c = v.shape[1]
    HW = H * W
    prec = _precision(q.dtype)
    delta = _alloc((B, H, W), q)
    block_p = 128 if HW >= 128 else max(16, _next_pow2(HW))
    _bwd_delta_kernel[(triton.cdiv(HW, block_p), B)](
        out, dout, delta, c, HW, BLOCK_P=block_p, BLOCK_C=max(16, min(_next_pow2(c), 32)), num_warps=4)
    dq = torch.zeros_like(q)  # filled by atomics from both directions
    dk = _alloc(k.shape, k)
    dv = _alloc(v.shape, v)
    for name, L, n_lines, s_line, s_pos, exclude in _directions(H, W):
        accumulate = name == "column"
        cfg = _config("dkdq", L, d, c)
        _bwd_dkdq_line_kernel[(n_lines, triton.cdiv(L, cfg["BLOCK_N"]), B)](
            q, k, v, dout, lse, delta, dq, dk, d, c, L, HW, s_line, s_pos,
            EXCLUDE_CENTRE=exclude, ACCUMULATE=accumulate, PRECISION=prec, **cfg)
        cfg = _config("dv", L, d, c)
        n_c = triton.cdiv(c, cfg["BLOCK_C"])
        _bwd_dv_line_kernel[(n_lines, triton.cdiv(L, cfg["BLOCK_N"]) * n_c, B)](
            q, k, dout, lse, dv, d, c, L, HW, s_line, s_pos, n_c,
            EXCLUDE_CENTRE=exclude, ACCUMULATE=accumulate, PRECISION=prec, **cfg)
    return dq, dk, dv


class _CrissCross(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v):
        out, lse = _forward(q, k, v)
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _backward(q, k, v, out, lse, dout.to(out.dtype).contiguous())
        return dq, dk, dv


def _check_shapes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or q.shape[0] != v.shape[0] \
            or q.shape[2:] != v.shape[2:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")


def criss_cross(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Criss-cross attention by the Triton kernels (differentiable in q, k and v).

    ``q``, ``k``: (B, d, H, W); ``v``: (B, c, H, W); returns (B, c, H, W) in v's dtype. Same
    semantics as :func:`ablate_kernels.reference.criss_cross_reference`. Inputs are made
    contiguous; float32/float64 compute in their own precision, other float types in float32.
    On CPU tensors this needs Triton's interpreter (``TRITON_INTERPRET=1``).
    """
    if triton is None:
        raise RuntimeError("criss_cross: Triton does not import here; use criss_cross_attention")
    _check_shapes(q, k, v)
    if v.numel() == 0:  # nothing to launch over (B, H, W or c is 0)
        return criss_cross_reference(q, k, v)
    out_dtype = v.dtype
    dtype = torch.float64 if torch.float64 in (q.dtype, k.dtype, v.dtype) else torch.float32
    q, k, v = (t.to(dtype).contiguous() for t in (q, k, v))
    out = _CrissCross.apply(q, k, v)
    return out.to(out_dtype)


def criss_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The kernel when :func:`ablate_kernels.dispatch.use_triton` says so, else the reference."""
    if dispatch.use_triton(q, k, v):
        return criss_cross(q, k, v)
    return criss_cross_reference(q, k, v)
