"""Local-window attention as Triton kernels (Local Relation Net's aggregation, the ``local_window`` pattern).

One algorithm in one module (its forward kernel, the backward kernels that recompute it, the
autograd function that ties them and the dispatch to the PyTorch reference): the kernels share
their block layout and must change together.

What it computes
----------------
Exactly :func:`ablate_kernels.reference.local_window_reference`: ``q``, ``k`` are
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
the gradcheck test uses it); outputs have the input dtype (float16 and bfloat16 work too).

GPU notes (block sizes, registers, what to tune first): ``kernels/README.md``.

Public API: :func:`local_window` (the kernel, an autograd function), :func:`local_window_attention`
(dispatches between kernel and reference), :func:`bytes_moved`.
"""
from __future__ import annotations

import torch

from . import dispatch
from .reference import local_window_reference

try:
    import triton
    import triton.language as tl

    _jit = triton.jit
except ImportError:  # pragma: no cover - Triton is Linux-only; the reference still runs elsewhere
    triton = tl = None

    def _jit(fn):
        return fn

COMPOSABILITIES = ("dot", "squared_diff")

# Test hook: when True every buffer a kernel writes is pre-filled with NaN (an unwritten element shows)
_POISON_OUTPUTS = False


def bytes_moved(B: int, Gd: int, C: int, H: int, W: int, window: int, dtype_bytes: int) -> int:
    """Minimum bytes a forward + backward must move: q, k (B x Gd x HW each), v and out (B x C x HW)
    forward; q, k, v, dout read and dq, dk, dv written backward; every element once:
    ``dtype_bytes * B * H * W * (6 * Gd + 5 * C)``. The window does not change the floor (a tile's
    halo is re-read from cache); it is an argument so a benchmark can pass its configuration. Our
    kernels move more (both backward kernels re-read q, k, v and dout; the forward re-reads q, k
    per extra value-channel chunk; lse and delta add B x G x HW x 4 bytes a pass)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    return dtype_bytes * B * H * W * (6 * Gd + 5 * C)


# --------------------------------------------------------------------------------------------
# Triton kernels
#
# Addressing: ``*_g`` is a scalar pointer to the program's (batch, group) slice of a tensor, and
# ``dn`` / ``cn`` are int32 (channels, BLOCK_N) offset blocks ``channel * N + pixel`` of the
# tile's own pixels (key/query and value channels). The block at window offset (dy, dx) is
# ``base + shift + dn`` with the scalar ``shift = dy*W + dx``; channel chunk c0 adds ``c0*N`` to
# the scalar. (Pointer blocks kept live across the loop would cost two registers an element.)
# ONE_D / ONE_C (constexpr): the key/query or value channels fit in one chunk; then the
# own-pixel operand is loaded once, before the loop over offsets, and the neighbour's block is
# loaded once per offset and reused for the score and the gradient. Otherwise the helpers below
# loop over chunks.
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
def _chunked_dot(a_ptr, b_ptr, off, mask, n_ch, N,
                 ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK: tl.constexpr):
    """sum over channels c < n_ch of a[c] * b[c], per pixel, chunk by chunk (off: chunk 0's offsets)."""
    ch = tl.arange(0, BLOCK)[:, None]
    total = tl.zeros([BLOCK_N], ACC)
    for c0 in range(0, n_ch, BLOCK):
        m = (ch < n_ch - c0) & mask[None, :]
        a = tl.load(a_ptr + c0 * N + off, mask=m, other=0.0).to(ACC)
        b = tl.load(b_ptr + c0 * N + off, mask=m, other=0.0).to(ACC)
        total += tl.sum(a * b, axis=0)
    return total


@_jit
def _chunked_score(q_ptr, k_ptr, off, mask, d, N,
                   SQDIFF: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """q . k or -|q - k|^2 per pixel, chunk by chunk (key/query channels wider than BLOCK_D)."""
    ch = tl.arange(0, BLOCK_D)[:, None]
    total = tl.zeros([BLOCK_N], ACC)
    for c0 in range(0, d, BLOCK_D):
        m = (ch < d - c0) & mask[None, :]
        a = tl.load(q_ptr + c0 * N + off, mask=m, other=0.0).to(ACC)
        b = tl.load(k_ptr + c0 * N + off, mask=m, other=0.0).to(ACC)
        if SQDIFF:
            total -= tl.sum((a - b) * (a - b), axis=0)
        else:
            total += tl.sum(a * b, axis=0)
    return total


@_jit
def _fwd_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, lse_ptr,
                G, d, Cg, H, W, n_tiles_w,
                KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr, ONE_D: tl.constexpr,
                BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (tiles, B*G, value-channel chunks): online softmax over the window offsets."""
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_c = tl.program_id(2)
    N = H * W
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)
    cd = tl.arange(0, BLOCK_D)[:, None]
    d_ok = cd < d
    cc = tl.arange(0, BLOCK_C)[:, None]
    c_ok = cc < Cg - pid_c * BLOCK_C
    dn = cd * N + pix[None, :]
    cn = cc * N + pix[None, :]
    qk_off = pid_bg.to(tl.int64) * d * N  # (b*G + g) * d: group g of image b
    v_off = pid_bg.to(tl.int64) * Cg * N + pid_c * BLOCK_C * N  # (b*G + g) * Cg = b*C + g*Cg
    q_g = q_ptr + qk_off
    k_g = k_ptr + qk_off
    v_g = v_ptr + v_off
    bias_row = bias_ptr + (pid_bg % G) * KS * KS
    if ONE_D:
        q_own = tl.load(q_g + dn, mask=d_ok & inside[None, :], other=0.0).to(ACC)

    m_i = tl.full([BLOCK_N], float("-inf"), ACC)
    l_i = tl.zeros([BLOCK_N], ACC)
    acc = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for dy in range(-R, R + 1):
        row_ok = inside & (y >= -dy) & (y < H - dy)
        for dx in range(-R, R + 1):
            ok = row_ok & (x >= -dx) & (x < W - dx)
            shift = dy * W + dx
            if ONE_D:
                k_nb = tl.load(k_g + shift + dn, mask=d_ok & ok[None, :], other=0.0).to(ACC)
                if SQDIFF:
                    s = -tl.sum((q_own - k_nb) * (q_own - k_nb), axis=0)
                else:
                    s = tl.sum(q_own * k_nb, axis=0)
            else:
                s = _chunked_score(q_g, k_g + shift, dn, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
            s = tl.where(ok, s + tl.load(bias_row + (dy + R) * KS + dx + R).to(ACC), float("-inf"))
            m_new = tl.maximum(m_i, s)
            m_ref = tl.where(m_new == float("-inf"), 0.0, m_new)  # no (-inf) - (-inf) before a valid offset
            alpha = tl.exp(m_i - m_ref)
            p = tl.exp(s - m_ref)
            l_i = l_i * alpha + p
            val = tl.load(v_g + shift + cn, mask=c_ok & ok[None, :], other=0.0).to(ACC)
            acc = acc * alpha[None, :] + p[None, :] * val
            m_i = m_new
    l_safe = tl.where(l_i > 0, l_i, 1.0)  # l = 0 only for pixels past the image edge
    out = acc / l_safe[None, :]
    tl.store(out_ptr + v_off + cn, out.to(out_ptr.dtype.element_ty), mask=c_ok & inside[None, :])
    if pid_c == 0:
        tl.store(lse_ptr + pid_bg.to(tl.int64) * N + pix, m_i + tl.log(l_safe), mask=inside)


# one Triton kernel (recomputes a tile's window softmax, then dq and the bias gradient): not split further
@_jit
def _bwd_dq_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, out_ptr, dout_ptr, lse_ptr,
                   delta_ptr, dq_ptr, dbias_ptr,
                   G, d, Cg, H, W, n_tiles_w, n_tiles,
                   KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr,
                   ONE_D: tl.constexpr, ONE_C: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr):
    """Grid (tiles, B*G, key-channel chunks), per query pixel i: delta_i, dq_i, and the
    per-tile geometry-bias gradient."""
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_d = tl.program_id(2)
    N = H * W
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)
    cd = tl.arange(0, BLOCK_D)[:, None]
    d_ok = cd < d - pid_d * BLOCK_D  # this program's dq chunk
    cc = tl.arange(0, BLOCK_C)[:, None]
    c_ok = cc < Cg
    dn = cd * N + pix[None, :]
    cn = cc * N + pix[None, :]
    qk_off = pid_bg.to(tl.int64) * d * N
    v_off = pid_bg.to(tl.int64) * Cg * N
    stat_off = pid_bg.to(tl.int64) * N
    q_g = q_ptr + qk_off
    k_g = k_ptr + qk_off
    v_g = v_ptr + v_off
    dout_g = dout_ptr + v_off
    d_off = pid_d * BLOCK_D * N
    bias_row = bias_ptr + (pid_bg % G) * KS * KS

    if ONE_C:
        dout_own = tl.load(dout_g + cn, mask=c_ok & inside[None, :], other=0.0).to(ACC)
        out_own = tl.load(out_ptr + v_off + cn, mask=c_ok & inside[None, :], other=0.0).to(ACC)
        delta = tl.sum(dout_own * out_own, axis=0)
    else:
        delta = _chunked_dot(dout_g, out_ptr + v_off, cn, inside, Cg, N, ACC, BLOCK_N, BLOCK_C)
    if pid_d == 0:
        tl.store(delta_ptr + stat_off + pix, delta, mask=inside)
    lse = tl.load(lse_ptr + stat_off + pix, mask=inside, other=0.0)
    q_own = tl.load(q_g + d_off + dn, mask=d_ok & inside[None, :], other=0.0).to(ACC)

    dq = tl.zeros([BLOCK_D, BLOCK_N], ACC)
    for dy in range(-R, R + 1):
        row_ok = inside & (y >= -dy) & (y < H - dy)
        for dx in range(-R, R + 1):
            ok = row_ok & (x >= -dx) & (x < W - dx)
            shift = dy * W + dx
            k_nb = tl.load(k_g + d_off + shift + dn, mask=d_ok & ok[None, :], other=0.0).to(ACC)
            if ONE_D:  # then pid_d == 0 and q_own, k_nb hold every channel
                if SQDIFF:
                    s = -tl.sum((q_own - k_nb) * (q_own - k_nb), axis=0)
                else:
                    s = tl.sum(q_own * k_nb, axis=0)
            else:
                s = _chunked_score(q_g, k_g + shift, dn, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
            s += tl.load(bias_row + (dy + R) * KS + dx + R).to(ACC)
            p = tl.where(ok, tl.exp(tl.where(ok, s - lse, 0.0)), 0.0)
            if ONE_C:
                v_nb = tl.load(v_g + shift + cn, mask=c_ok & ok[None, :], other=0.0).to(ACC)
                dp = tl.sum(dout_own * v_nb, axis=0)
            else:
                dp = _chunked_dot(dout_g, v_g + shift, cn, ok, Cg, N, ACC, BLOCK_N, BLOCK_C)
            ds = p * (dp - delta)
            if SQDIFF:
                dq += ds[None, :] * -2.0 * (q_own - k_nb)
            else:
                dq += ds[None, :] * k_nb
            if pid_d == 0:
                tl.store(dbias_ptr + (pid_bg.to(tl.int64) * n_tiles + pid_tile) * KS * KS + (dy + R) * KS + dx + R,
                         tl.sum(ds, axis=0))
    tl.store(dq_ptr + qk_off + d_off + dn, dq.to(dq_ptr.dtype.element_ty), mask=d_ok & inside[None, :])


# one Triton kernel (recomputes the softmax of the queries that see a key, then dk and dv): not split further
@_jit
def _bwd_dkdv_kernel(q_ptr, k_ptr, v_ptr, bias_ptr, dout_ptr, lse_ptr, delta_ptr, dk_ptr, dv_ptr,
                     G, d, Cg, H, W, n_tiles_w, n_chunks_d,
                     KS: tl.constexpr, SQDIFF: tl.constexpr, ACC: tl.constexpr,
                     ONE_D: tl.constexpr, ONE_CHUNK: tl.constexpr,
                     BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_D: tl.constexpr,
                     BLOCK_C: tl.constexpr):
    """Grid (tiles, B*G, max(key, value) channel chunks), per key pixel j: program z owns dk
    chunk z (if z < n_chunks_d) and dv chunk z. The queries that see j at offset (dy, dx) are
    i = j - (dy, dx); the attention's transpose is gathered from them, never scattered.
    ONE_CHUNK: both channel counts fit in one chunk, so there is one program per tile."""
    BLOCK_N: tl.constexpr = BLOCK_H * BLOCK_W
    R: tl.constexpr = KS // 2
    pid_tile = tl.program_id(0)
    pid_bg = tl.program_id(1)
    pid_ch = tl.program_id(2)
    N = H * W
    y, x, pix, inside = _tile_pixels(pid_tile, n_tiles_w, H, W, BLOCK_H, BLOCK_W)  # key pixels j
    has_dk = pid_ch < n_chunks_d
    cd = tl.arange(0, BLOCK_D)[:, None]
    d_ok = cd < d - pid_ch * BLOCK_D  # all False past the key-channel chunks
    cc = tl.arange(0, BLOCK_C)[:, None]
    c_ok = cc < Cg - pid_ch * BLOCK_C
    dn = cd * N + pix[None, :]
    cn = cc * N + pix[None, :]
    d_off = pid_ch * BLOCK_D * N
    c_off = pid_ch * BLOCK_C * N
    qk_off = pid_bg.to(tl.int64) * d * N
    v_off = pid_bg.to(tl.int64) * Cg * N
    stat_off = pid_bg.to(tl.int64) * N
    q_g = q_ptr + qk_off
    k_g = k_ptr + qk_off
    v_g = v_ptr + v_off
    dout_g = dout_ptr + v_off
    lse_g = lse_ptr + stat_off
    delta_g = delta_ptr + stat_off
    bias_row = bias_ptr + (pid_bg % G) * KS * KS

    if ONE_D:  # every channel, for the score; programs with dk work have pid_ch == 0
        k_own = tl.load(k_g + dn, mask=(cd < d) & inside[None, :], other=0.0).to(ACC)
    else:  # this program's dk chunk
        k_own = tl.load(k_g + d_off + dn, mask=d_ok & inside[None, :], other=0.0).to(ACC)
    if ONE_CHUNK:
        v_own = tl.load(v_g + cn, mask=c_ok & inside[None, :], other=0.0).to(ACC)
    dk = tl.zeros([BLOCK_D, BLOCK_N], ACC)
    dv = tl.zeros([BLOCK_C, BLOCK_N], ACC)
    for dy in range(-R, R + 1):
        row_ok = inside & (y >= dy) & (y < H + dy)
        for dx in range(-R, R + 1):
            ok = row_ok & (x >= dx) & (x < W + dx)
            shift = -(dy * W + dx)  # from j to i
            if ONE_D:
                q_i = tl.load(q_g + shift + dn, mask=(cd < d) & ok[None, :], other=0.0).to(ACC)
                if SQDIFF:
                    s = -tl.sum((q_i - k_own) * (q_i - k_own), axis=0)
                else:
                    s = tl.sum(q_i * k_own, axis=0)
            else:
                s = _chunked_score(q_g + shift, k_g, dn, ok, d, N, SQDIFF, ACC, BLOCK_N, BLOCK_D)
            s += tl.load(bias_row + (dy + R) * KS + dx + R).to(ACC)
            lse = tl.load(lse_g + shift + pix, mask=ok, other=0.0)
            p = tl.where(ok, tl.exp(tl.where(ok, s - lse, 0.0)), 0.0)
            dout_i = tl.load(dout_g + c_off + shift + cn, mask=c_ok & ok[None, :], other=0.0).to(ACC)
            dv += p[None, :] * dout_i
            if has_dk:
                delta = tl.load(delta_g + shift + pix, mask=ok, other=0.0)
                if ONE_CHUNK:
                    dp = tl.sum(dout_i * v_own, axis=0)
                else:
                    dp = _chunked_dot(dout_g + shift, v_g, cn, ok, Cg, N, ACC, BLOCK_N, BLOCK_C)
                ds = p * (dp - delta)
                if not ONE_D:
                    q_i = tl.load(q_g + d_off + shift + dn, mask=d_ok & ok[None, :], other=0.0).to(ACC)
                if SQDIFF:
                    dk += ds[None, :] * 2.0 * (q_i - k_own)
                else:
                    dk += ds[None, :] * q_i
    tl.store(dk_ptr + qk_off + d_off + dn, dk.to(dk_ptr.dtype.element_ty), mask=d_ok & inside[None, :])
    tl.store(dv_ptr + v_off + c_off + cn, dv.to(dv_ptr.dtype.element_ty), mask=c_ok & inside[None, :])


# --------------------------------------------------------------------------------------------
# Launch
# --------------------------------------------------------------------------------------------
# Test hook: a dict of block sizes that replaces :func:`_blocks`'s choice (to exercise several
# tiles and channel chunks on tiny inputs).
_BLOCKS_OVERRIDE: dict | None = None


def _pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _blocks(H: int, W: int, d: int, cg: int) -> dict:
    """Tile and chunk sizes. Channel chunks of up to 64; a tile of 32 to 128 pixels, at most 32
    wide, with about 2048 elements in each (chunk x pixels) block, so that the five or six
    blocks a program holds fit in registers at 4 warps (see "GPU notes" in the module
    docstring). Not yet tuned on a GPU."""
    if _BLOCKS_OVERRIDE is not None:
        return dict(_BLOCKS_OVERRIDE)
    block_d = min(_pow2(d), 64)
    block_c = min(_pow2(cg), 64)
    pixels = max(32, min(128, 2048 // max(block_c, block_d)))
    block_w = min(_pow2(W), 32, pixels)
    block_h = min(_pow2(H), max(1, pixels // block_w))
    return dict(BLOCK_H=block_h, BLOCK_W=block_w, BLOCK_D=block_d, BLOCK_C=block_c)


class _Launch:
    """Grid geometry shared by the three kernels."""

    def __init__(self, q: torch.Tensor, v: torch.Tensor, groups: int):
        B, gd, H, W = q.shape
        self.B, self.G, self.H, self.W = B, groups, H, W
        self.d, self.cg = gd // groups, v.shape[1] // groups
        self.blocks = _blocks(H, W, self.d, self.cg)
        self.n_tiles_w = triton.cdiv(W, self.blocks["BLOCK_W"])
        self.n_tiles = triton.cdiv(H, self.blocks["BLOCK_H"]) * self.n_tiles_w
        self.n_chunks_d = triton.cdiv(self.d, self.blocks["BLOCK_D"])
        self.n_chunks_c = triton.cdiv(self.cg, self.blocks["BLOCK_C"])
        self.acc = tl.float64 if q.dtype == torch.float64 else tl.float32
        self.stat_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32

    def sizes(self):
        return self.G, self.d, self.cg, self.H, self.W, self.n_tiles_w


def _new(shape, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if _POISON_OUTPUTS:
        return torch.full(shape, float("nan"), device=like.device, dtype=dtype)
    return torch.empty(shape, device=like.device, dtype=dtype)


def _check(q, k, v, geometry_bias, window, composability):
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    if composability not in COMPOSABILITIES:
        raise ValueError(f"composability must be one of {COMPOSABILITIES}, got {composability!r}")
    if q.dim() != 4 or q.shape != k.shape or v.dim() != 4 or v.shape[0] != q.shape[0] or v.shape[2:] != q.shape[2:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if geometry_bias.dim() != 2 or geometry_bias.shape[1] != window * window:
        raise ValueError(f"geometry_bias must be (G, {window * window}), got {tuple(geometry_bias.shape)}")
    g = geometry_bias.shape[0]
    if g == 0 or q.shape[1] % g or v.shape[1] % g:
        raise ValueError(f"{q.shape[1]} key/query and {v.shape[1]} value channels do not split into {g} groups")
    if len({t.device for t in (q, k, v, geometry_bias)}) > 1:
        raise ValueError("q, k, v and geometry_bias must be on one device")


class LocalWindowAttention(torch.autograd.Function):
    """Triton forward and backward of :func:`local_window` (inputs checked, one dtype)."""

    @staticmethod
    def forward(ctx, q, k, v, geometry_bias, window, composability):
        q, k, v, bias = (t.contiguous() for t in (q, k, v, geometry_bias))
        L = _Launch(q, v, bias.shape[0])
        out = _new(v.shape, q, q.dtype)
        lse = _new((L.B, L.G, L.H, L.W), q, L.stat_dtype)
        _fwd_kernel[(L.n_tiles, L.B * L.G, L.n_chunks_c)](
            q, k, v, bias, out, lse, *L.sizes(),
            KS=window, SQDIFF=composability == "squared_diff", ACC=L.acc, ONE_D=L.n_chunks_d == 1, **L.blocks)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.window, ctx.composability = window, composability
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, bias, out, lse = ctx.saved_tensors
        window, sqdiff = ctx.window, ctx.composability == "squared_diff"
        dout = dout.contiguous()
        L = _Launch(q, v, bias.shape[0])
        one_d, one_c = L.n_chunks_d == 1, L.n_chunks_c == 1
        delta = _new(lse.shape, q, L.stat_dtype)
        dbias_tiles = _new((L.B * L.G, L.n_tiles, window * window), q, L.stat_dtype)
        dq, dk, dv = _new(q.shape, q, q.dtype), _new(k.shape, q, q.dtype), _new(v.shape, q, q.dtype)
        _bwd_dq_kernel[(L.n_tiles, L.B * L.G, L.n_chunks_d)](
            q, k, v, bias, out, dout, lse, delta, dq, dbias_tiles, *L.sizes(), L.n_tiles,
            KS=window, SQDIFF=sqdiff, ACC=L.acc, ONE_D=one_d, ONE_C=one_c, **L.blocks)
        _bwd_dkdv_kernel[(L.n_tiles, L.B * L.G, max(L.n_chunks_d, L.n_chunks_c))](
            q, k, v, bias, dout, lse, delta, dk, dv, *L.sizes(), L.n_chunks_d,
            KS=window, SQDIFF=sqdiff, ACC=L.acc, ONE_D=one_d, ONE_CHUNK=one_d and one_c, **L.blocks)
        dbias = dbias_tiles.view(L.B, L.G, L.n_tiles, window * window).sum((0, 2)).to(bias.dtype)
        return dq, dk, dv, dbias, None, None


def local_window(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, geometry_bias: torch.Tensor,
                 window: int, composability: str = "dot") -> torch.Tensor:
    """The Triton kernels (forward and backward) for ``local_window_reference``'s computation.

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
    return local_window_reference(q, k, v, geometry_bias, window, composability)
