"""Local-window attention as Triton kernels (Local Relation Net's aggregation, the ``local_window`` pattern).

What it computes
----------------
Exactly :func:`ablate.attention.local_relation.local_window_reference`: ``q``, ``k`` are
(B, G*d, H, W) (G groups of d channels), ``v`` is (B, C, H, W) with C divisible by G (group g
aggregates value channels ``g*C/G .. (g+1)*C/G - 1``), ``geometry_bias`` is (G, k*k) for a
k x k window (k odd, r = k // 2, offsets row-major from (-r, -r)). For pixel i, group g and
window offset o with neighbour j = i + o inside the image::

    s[i, o] = q_i . k_j                (composability "dot")
            = -|q_i - k_j|^2           (composability "squared_diff")
            + geometry_bias[g, o]
    P[i, o] = softmax over the offsets whose neighbour lies inside the image
    out_i   = sum_o P[i, o] v_j        (the group's C/G value channels)

Neighbours outside the image are left out of the softmax (not zero-padded into it).

Memory
------
Nothing k*k-wide is ever stored: no unfolded (B, G, d, k*k, N) keys or values and no
(B, G, k*k, N) attention. The forward saves, besides its inputs and the output, one float32
(float64 for float64 inputs) log-sum-exp per pixel and group, (B, G, H, W); the backward adds
one more per-pixel statistic of the same size (``delta_i = dout_i . out_i``) and a
(B*G, tiles, k*k) array of per-tile geometry-bias gradients, summed at the end. Recomputing P
in the backward costs k*k score evaluations (2d flops each) per pixel and group, far cheaper
than storing and re-reading the attention.

Algorithm
---------
Every program owns a BLOCK_H x BLOCK_W tile of pixels of one (batch, group) and loops over the
k*k window offsets (dy-major, so consecutive offsets read the same image rows and mostly hit
the L1 cache; the halo of a tile stays in L2 across neighbouring tiles). A neighbour's key and
value columns are gathered by pointer arithmetic (a constant shift ``dy*W + dx`` of the tile),
masked where it falls outside the image, so the window is never unfolded into memory.
Channel dimensions are processed in chunks (BLOCK_D key/query channels, BLOCK_C value
channels), so any d and C/G work, powers of two or not.

* forward (grid: tiles x B*G x value-channel chunks): online softmax over the offsets
  (running max ``m``, running sum ``l``, value accumulator rescaled when the max grows),
  ``out = acc / l``; the chunk-0 program writes ``lse = m + log l``.
* backward, kernel 1, ``dq`` (grid: tiles x B*G x key-channel chunks), per query pixel i:
  ``delta_i = dout_i . out_i``; for each offset recompute ``P = exp(s - lse_i)``,
  ``dP = dout_i . v_j``, ``dS = P (dP - delta_i)``, ``dq_i += dS * ds/dq_i`` (``k_j`` or
  ``-2 (q_i - k_j)``); the per-tile sums of ``dS`` for each offset are the geometry-bias
  gradient (summed over tiles and the batch in PyTorch: a (B*G, tiles, k*k) reduction).
* backward, kernel 2, ``dk, dv`` (grid: tiles x B*G x max(key, value) channel chunks), per key
  pixel j: the queries that see j are ``i = j - o`` for every offset o, so the scatter of the
  attention's transpose becomes a gather: recompute ``P[i, o]`` from ``q_i``, ``k_j`` and the
  stored ``lse_i``; ``dv_j += P dout_i``; ``dk_j += dS * ds/dk_j`` (``q_i`` or
  ``2 (q_i - k_j)``), with ``dP = dout_i . v_j`` computed only by programs that own a
  key-channel chunk. No atomics: every output element has one writer, so the backward is
  deterministic.

Accumulation is float32 (float64 for float64 inputs, which the interpreter and GPUs support;
the gradcheck test uses it); outputs have the input dtype. Block sizes come from
:func:`_blocks` (modest, chosen by reasoning about registers, not yet tuned on a GPU).
:func:`bytes_moved` gives the compulsory traffic for a bandwidth floor.
"""
from __future__ import annotations

import torch

from . import dispatch

try:
    import triton
    import triton.language as tl

    _jit = triton.jit
except ImportError:  # pragma: no cover - Triton is Linux-only; the reference still runs elsewhere
    triton = tl = None

    def _jit(fn):
        return fn

COMPOSABILITIES = ("dot", "squared_diff")

# Test hook: when True every buffer a kernel writes is pre-filled with NaN instead of left
# uninitialised, so an element a kernel forgets to write shows up as NaN.
_POISON_OUTPUTS = False


def bytes_moved(B: int, Gd: int, C: int, H: int, W: int, window: int, dtype_bytes: int) -> int:
    """Minimum bytes a forward + backward must move to or from memory.

    Forward reads q, k (B x Gd x HW each) and v (B x C x HW) and writes out (B x C x HW);
    backward reads q, k, v and dout and writes dq, dk, dv. Every element once, so
    ``dtype_bytes * B * H * W * (6 * Gd + 5 * C)``. The window does not change the floor (the
    halo of a tile is re-read from cache, and the geometry bias is a few hundred numbers);
    it is an argument so a benchmark can pass its full configuration. Our kernels move more
    than this: the backward re-reads its inputs in both kernels and reads ``out`` once, plus
    the per-pixel statistics (about ``B x G x HW`` x 4 bytes each, three times written or
    read).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    return dtype_bytes * B * H * W * (6 * Gd + 5 * C)


# --------------------------------------------------------------------------------------------
# Triton kernels
# --------------------------------------------------------------------------------------------
@_jit
def _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Row, column, flat index and in-image mask of a BLOCK_H x BLOCK_W tile, flattened."""
    idx = tl.arange(0, BLOCK_H * BLOCK_W)
    y = (pid_tile // n_tiles_w) * BLOCK_H + idx // BLOCK_W
    x = (pid_tile % n_tiles_w) * BLOCK_W + idx % BLOCK_W
    inside = (y < H) & (x < W)
    return y, x, y * W + x, inside


@_jit
def _channel_dot(a_ptr, b_ptr, pix_a, pix_b, mask, n_ch, N,
                 ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK: tl.constexpr):
    """sum over channels c < n_ch of a[c, pix_a] * b[c, pix_b] (channel stride N)."""
    total = tl.zeros([BLOCK_N], ACC)
    for c0 in range(0, n_ch, BLOCK):
        ch = c0 + tl.arange(0, BLOCK)
        m = (ch < n_ch)[:, None] & mask[None, :]
        a = tl.load(a_ptr + ch[:, None] * N + pix_a[None, :], mask=m, other=0.0).to(ACC)
        b = tl.load(b_ptr + ch[:, None] * N + pix_b[None, :], mask=m, other=0.0).to(ACC)
        total += tl.sum(a * b, axis=0)
    return total


@_jit
def _score(q_ptr, k_ptr, pix_q, pix_k, mask, d, N,
           SQDIFF: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """Appearance score of query pixels pix_q against key pixels pix_k (one group)."""
    if SQDIFF:
        total = tl.zeros([BLOCK_N], ACC)
        for d0 in range(0, d, BLOCK_D):
            ch = d0 + tl.arange(0, BLOCK_D)
            m = (ch < d)[:, None] & mask[None, :]
            a = tl.load(q_ptr + ch[:, None] * N + pix_q[None, :], mask=m, other=0.0).to(ACC)
            b = tl.load(k_ptr + ch[:, None] * N + pix_k[None, :], mask=m, other=0.0).to(ACC)
            diff = a - b
            total -= tl.sum(diff * diff, axis=0)
        return total
    else:
        return _channel_dot(q_ptr, k_ptr, pix_q, pix_k, mask, d, N, ACC, BLOCK_N, BLOCK_D)


@_jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
                G, d, Cg, H, W, n_tiles_w,
                KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr,
                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_c = tl.program_id(2)
    N = H * W
    g = pid_bg % G
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)
    q_base = q_ptr + pid_bg.to(tl.int64) * d * N  # (b*G + g)*d = b*G*d + g*d
    k_base = k_ptr + pid_bg.to(tl.int64) * d * N
    v_base = v_ptr + pid_bg.to(tl.int64) * Cg * N  # (b*G + g)*Cg = b*C + g*Cg
    ch = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    ch_ok = ch < Cg

    m_i = tl.full([BLOCK_N], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_N], ACC)
    acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for o in range(0, KS * KS):
        dy = o // KS - R
        dx = o % KS - R
        ok = inside & (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
        nb = pix + dy * W + dx
        s = _score(q_base, k_base, pix, nb, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
        s = tl.where(ok, s + tl.load(bias_ptr + g * KS * KS + o).to(ACC), float("-inf"))
        m_new = tl.maximum(m_i, s)
        m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no (-inf) - (-inf) before a valid offset
        alpha = tl.exp(m_i - m_ref)
        p = tl.exp(s - m_ref)
        l_i = l_i * alpha + p
        val = tl.load(v_base + ch[:, None] * N + nb[None, :], mask=ch_ok[:, None] & ok[None, :], other=0.0)
        acc = acc * alpha[None, :] + p[None, :] * val.to(ACC)
        m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)
    out = acc / l_safe[None, :]
    tl.store(out_ptr + pid_bg.to(tl.int64) * Cg * N + ch[:, None] * N + pix[None, :],
             out.to(out_ptr.dtype.element_ty), mask=ch_ok[:, None] & inside[None, :])
    if pid_c == 0:
        tl.store(lse_ptr + pid_bg.to(tl.int64) * N + pix, m_i + tl.log(l_safe), mask=inside)


@_jit
def _bwd_dq_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, dout_ptr, lse_ptr,
                   delta_ptr, dq_ptr, dbias_ptr,
                   G, d, Cg, H, W, n_tiles_w, n_tiles,
                   KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_d = tl.program_id(2)
    N = H * W
    g = pid_bg % G
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)
    qk_off = pid_bg.to(tl.int64) * d * N
    v_off = pid_bg.to(tl.int64) * Cg * N
    q_base = q_ptr + qk_off
    k_base = k_ptr + qk_off
    v_base = v_ptr + v_off
    dout_base = dout_ptr + v_off

    delta = _channel_dot(dout_base, out_ptr + v_off, pix, pix, inside, Cg, N, ACC, BLOCK_N, BLOCK_C)
    lse = tl.load(lse_ptr + pid_bg.to(tl.int64) * N + pix, mask=inside, other=0.0)
    if pid_d == 0:
        tl.store(delta_ptr + pid_bg.to(tl.int64) * N + pix, delta, mask=inside)

    ch = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_ok = ch < d
    q_own = tl.load(q_base + ch[:, None] * N + pix[None, :], mask=ch_ok[:, None] & inside[None, :],
                    other=0.0).to(ACC)
    dq = tl.zeros([BLOCK_D, BLOCK_N], ACC)
    for o in range(0, KS * KS):
        dy = o // KS - R
        dx = o % KS - R
        ok = inside & (y + dy >= 0) & (y + dy < H) & (x + dx >= 0) & (x + dx < W)
        nb = pix + dy * W + dx
        s = _score(q_base, k_base, pix, nb, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
        s += tl.load(bias_ptr + g * KS * KS + o).to(ACC)
        p = tl.where(ok, tl.exp(tl.where(ok, s - lse, 0.0)), 0.0)
        dp = _channel_dot(dout_base, v_base, pix, nb, ok, Cg, N, ACC, BLOCK_N, BLOCK_C)
        ds = p * (dp - delta)
        k_nb = tl.load(k_base + ch[:, None] * N + nb[None, :], mask=ch_ok[:, None] & ok[None, :],
                       other=0.0).to(ACC)
        if SQDIFF:
            dq += ds[None, :] * (-2.0) * (q_own - k_nb)
        else:
            dq += ds[None, :] * k_nb
        if pid_d == 0:
            tl.store(dbias_ptr + (pid_bg.to(tl.int64) * n_tiles + pid_tile) * KS * KS + o, tl.sum(ds, axis=0))
    tl.store(dq_ptr + qk_off + ch[:, None] * N + pix[None, :], dq.to(dq_ptr.dtype.element_ty),
             mask=ch_ok[:, None] & inside[None, :])


@_jit
def _bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                     G, d, Cg, H, W, n_tiles_w, n_chunks_d,
                     KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_ch = tl.program_id(2)
    N = H * W
    g = pid_bg % G
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)  # key pixels j
    qk_off = pid_bg.to(tl.int64) * d * N
    v_off = pid_bg.to(tl.int64) * Cg * N
    stat_off = pid_bg.to(tl.int64) * N
    q_base = q_ptr + qk_off
    k_base = k_ptr + qk_off
    v_base = v_ptr + v_off
    dout_base = dout_ptr + v_off
    has_dk = pid_ch < n_chunks_d  # programs past the key-channel chunks only accumulate dv

    chd = pid_ch * BLOCK_D + tl.arange(0, BLOCK_D)
    chd_ok = chd < d
    chc = pid_ch * BLOCK_C + tl.arange(0, BLOCK_C)
    chc_ok = chc < Cg
    k_own = tl.load(k_base + chd[:, None] * N + pix[None, :], mask=chd_ok[:, None] & inside[None, :],
                    other=0.0).to(ACC)
    dk = tl.zeros([BLOCK_D, BLOCK_N], ACC)
    dv = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for o in range(0, KS * KS):
        dy = o // KS - R
        dx = o % KS - R
        # query pixel i = j - (dy, dx) sees j at offset o
        ok = inside & (y - dy >= 0) & (y - dy < H) & (x - dx >= 0) & (x - dx < W)
        qi = pix - dy * W - dx
        s = _score(q_base, k_base, qi, pix, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
        s += tl.load(bias_ptr + g * KS * KS + o).to(ACC)
        lse = tl.load(lse_ptr + stat_off + qi, mask=ok, other=0.0)
        p = tl.where(ok, tl.exp(tl.where(ok, s - lse, 0.0)), 0.0)
        dout_i = tl.load(dout_base + chc[:, None] * N + qi[None, :], mask=chc_ok[:, None] & ok[None, :],
                         other=0.0).to(ACC)
        dv += p[None, :] * dout_i
        if has_dk:
            delta = tl.load(delta_ptr + stat_off + qi, mask=ok, other=0.0)
            dp = _channel_dot(dout_base, v_base, qi, pix, ok, Cg, N, ACC, BLOCK_N, BLOCK_C)
            ds = p * (dp - delta)
            q_i = tl.load(q_base + chd[:, None] * N + qi[None, :], mask=chd_ok[:, None] & ok[None, :],
                          other=0.0).to(ACC)
            if SQDIFF:
                dk += ds[None, :] * 2.0 * (q_i - k_own)
            else:
                dk += ds[None, :] * q_i
    tl.store(dk_ptr + qk_off + chd[:, None] * N + pix[None, :], dk.to(dk_ptr.dtype.element_ty),
             mask=chd_ok[:, None] & inside[None, :])
    tl.store(dv_ptr + v_off + chc[:, None] * N + pix[None, :], dv.to(dv_ptr.dtype.element_ty),
             mask=chc_ok[:, None] & inside[None, :])


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------
def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _blocks(H: int, W: int, d: int, cg: int) -> dict:
    """Tile and chunk sizes: up to 64 channels a chunk, and about 4096 accumulator elements
    (BLOCK_C x pixels) a program, at most 256 pixels in a tile at most 32 wide."""
    block_d = min(_pow2(d), 64)
    block_c = min(_pow2(cg), 64)
    pixels = max(32, min(256, 4096 // max(block_c, block_d)))
    block_w = min(_pow2(W), 32, pixels)
    block_h = min(_pow2(H), max(1, pixels // block_w))
    return dict(BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_D=block_d, BLOCK_C=block_c)


def _new(shape, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if _POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _check(q, k, v, geometry_bias, window, composability):
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    if composability not in COMPOSABILITIES:
        raise ValueError(f"composability must be one of {COMPOSABILITIES}, got {composability!r}")
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or v.shape[0] != q.shape[0] or v.shape[2:] != q.shape[2:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    g = geometry_bias.shape[0]
    if geometry_bias.dim() != 2 or geometry_bias.shape != (g, window * window):
        raise ValueError(f"geometry_bias must be (G, {window * window}), got {tuple(geometry_bias.shape)}")
    if g == 0 or q.shape[1] % g or v.shape[1] % g:
        raise ValueError(f"{q.shape[1]} key/query and {v.shape[1]} value channels do not split into {g} groups")


class LocalWindowAttention(torch.autograd.Function):
    """Triton forward and backward of :func:`local_window` (inputs already checked, same dtype)."""

    @staticmethod
    def forward(ctx, q, k, v, geometry_bias, window, composability):
        q, k, v, bias = (t.contiguous() for t in (q, k, v, geometry_bias))
        B, gd, H, W = q.shape
        C = v.shape[1]
        G = bias.shape[0]
        d, cg = gd // G, C // G
        blk = _blocks(H, W, d, cg)
        n_tw = triton.cdiv(W, blk["BLOCK_W"])
        n_tiles = triton.cdiv(H, blk["BLOCK_H"]) * n_tw
        acc = _acc(q.dtype)
        stat_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
        out = _new((B, C, H, W), q, q.dtype)
        lse = _new((B, G, H, W), q, stat_dtype)
        grid = (n_tiles, B * G, triton.cdiv(cg, blk["BLOCK_C"]))
        _fwd_kernel[grid](q, k, v, bias, out, lse, G, d, cg, H, W, n_tw,
                          KS=window, SQDIFF=composability == "squared_diff", ACC=acc, **blk)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.window, ctx.composability = window, composability
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, out, lse = ctx.saved_tensors
        window, sqdiff = ctx.window, ctx.composability == "squared_diff"
        dout = dout.contiguous()
        B, gd, H, W = q.shape
        C = v.shape[1]
        G = bias.shape[0]
        d, cg = gd // G, C // G
        blk = _blocks(H, W, d, cg)
        n_tw = triton.cdiv(W, blk["BLOCK_W"])
        n_tiles = triton.cdiv(H, blk["BLOCK_H"]) * n_tw
        acc = _acc(q.dtype)
        n_chunks_d = triton.cdiv(d, blk["BLOCK_D"])
        n_chunks_c = triton.cdiv(cg, blk["BLOCK_C"])
        delta = _new(lse.shape, q, lse.dtype)
        dbias_tiles = _new((B * G, n_tiles, window * window), q, lse.dtype)
        dq, dk, dv = _new(q.shape, q, q.dtype), _new(k.shape, q, q.dtype), _new(v.shape, q, q.dtype)
        _bwd_dq_kernel[(n_tiles, B * G, n_chunks_d)](
            q, k, v, bias, out, dout, lse, delta, dq, dbias_tiles, G, d, cg, H, W, n_tw, n_tiles,
            KS=window, SQDIFF=sqdiff, ACC=acc, **blk)
        _bwd_dkdv_kernel[(n_tiles, B * G, max(n_chunks_d, n_chunks_c))](
            q, k, v, bias, dout, lse, delta, dk, dv, G, d, cg, H, W, n_tw, n_chunks_d,
            KS=window, SQDIFF=sqdiff, ACC=acc, **blk)
        dbias = dbias_tiles.view(B, G, n_tiles, window * window).sum((0, 2)).to(bias.dtype)
        return dq, dk, dv, dbias, None, None


def local_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry_bias: torch.Tensor,
                 window: int, composability: str = "dot") -> torch.Tensor:
    """The Triton kernel (forward and backward) for ``local_window_reference``'s computation.

    Shapes and semantics as in the module docstring. q, k and v are brought to one dtype
    (PyTorch's promotion rule) before the kernel; the output has that dtype. Runs on CUDA
    tensors, or on CPU tensors under ``TRITON_INTERPRET=1``.
    """
    if triton is None:
        raise RuntimeError("local_window needs Triton, which does not import here")
    _check(q, k, v, geometry_bias, window, composability)
    dtype = torch.promote_types(torch.promote_types(q.dtype, k.dtype), v.dtype)
    q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
    return LocalWindowAttention.apply(q, k, v, geometry_bias, window, composability)


def local_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry_bias: torch.Tensor,
                           window: int, composability: str = "dot") -> torch.Tensor:
    """:func:`local_window` where :func:`ablate_kernels.dispatch.use_triton` says so, else the reference."""
    if dispatch.use_triton(q, k, v):
        return local_window(q, k, v, geometry_bias, window, composability)
    from ablate.attention.local_relation import local_window_reference

    return local_window_reference(q, k, v, geometry_bias, window, composability)
