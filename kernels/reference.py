"""The plain-PyTorch definitions the kernels must equal, and the fallback where a kernel cannot run.

Each function is the computation of one kernel module, written the obvious way (dense einsums,
``unfold``); the Triton code next to it is tested against it, and the dispatchers
(``criss_cross_attention``, ``local_window_attention``, ``em_attention_iterations``) return it
where the kernel does not run (no CUDA, no Triton, ``ABLATE_KERNELS=reference``, a variant the
kernel does not implement, or gradients the kernel has no backward for).

* :func:`criss_cross_reference`: CCNet's criss-cross attention (``criss_cross.py``).
* :func:`local_window_reference`: Local Relation's windowed attention (``local_window.py``).
* :func:`em_step`, :func:`em_iterations`: EMANet's EM iterations (``em.py``), with the two
  A2Net switches (``gather``, ``descriptor_norm``) the kernel leaves to this reference.

The mechanisms (``ablate.attention.criss_cross``, ``.local_relation``, ``.ema``) import these;
nothing here imports ``ablate`` or Triton.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def criss_cross_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Criss-cross attention without the N x N matrix.

    ``q``, ``k``: (B, d, H, W); ``v``: (B, c, H, W). For each pixel (h, w) the scores against
    its column (i, w) for every row i and its row (h, j) for every column j are concatenated
    (H + W entries), the centre is removed from the column part (``-inf``) so it appears once,
    one softmax runs over the band and the values are summed with those weights.
    Returns (B, c, H, W).
    """
    if q.shape != k.shape or q.shape[0] != v.shape[0] or q.shape[2:] != v.shape[2:]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    h = q.shape[2]
    # column part: scores[b, h, w, i] = q[b, :, h, w] . k[b, :, i, w]
    col = torch.einsum("bdhw,bdiw->bhwi", q, k)
    centre = torch.eye(h, dtype=torch.bool, device=q.device).view(h, 1, h)  # [h, ., i]: i == h
    col = col.masked_fill(centre, float("-inf"))
    # row part: scores[b, h, w, j] = q[b, :, h, w] . k[b, :, h, j]
    row = torch.einsum("bdhw,bdhj->bhwj", q, k)
    attn = torch.softmax(torch.cat([col, row], dim=-1), dim=-1)
    a_col, a_row = attn[..., :h], attn[..., h:]
    out = torch.einsum("bciw,bhwi->bchw", v, a_col)
    return out + torch.einsum("bchj,bhwj->bchw", v, a_row)



def local_window_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    geometry_bias: torch.Tensor,
    window: int,
    composability: str = "dot",
) -> torch.Tensor:
    """Grouped attention inside a ``window`` x ``window`` neighbourhood.

    ``q``, ``k``: (B, G*d, H, W), G groups of d channels each; ``v``: (B, C, H, W) with C
    divisible by G (group g aggregates channels ``g*C/G .. (g+1)*C/G - 1``); ``geometry_bias``:
    (G, window*window) added to the scores of each window offset (row-major, offset (-r, -r)
    first, r = window // 2; zeros for no geometry prior); it also fixes G. Scores are ``q . k`` per group (``dot``) or
    ``-|q - k|^2`` (``squared_diff``); out-of-image positions are excluded from the softmax.
    Returns (B, C, H, W).
    """
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be odd and >= 1, got {window}")
    b, gd, h, w = q.shape
    c = v.shape[1]
    g = geometry_bias.shape[0]
    if geometry_bias.shape != (g, window * window):
        raise ValueError(f"geometry_bias must be (G, {window * window}), got {tuple(geometry_bias.shape)}")
    if gd % g or c % g:
        raise ValueError(f"{gd} key/query and {c} value channels do not split into {g} groups")
    d, kk, r = gd // g, window * window, window // 2
    n = h * w
    k_win = F.unfold(k, window, padding=r).view(b, g, d, kk, n)
    q_c = q.reshape(b, g, d, 1, n)
    if composability == "dot":
        scores = (q_c * k_win).sum(2)
    elif composability == "squared_diff":
        scores = -((q_c - k_win) ** 2).sum(2)
    else:
        raise ValueError(f"composability must be 'dot' or 'squared_diff', got {composability!r}")
    scores = scores + geometry_bias.view(1, g, kk, 1)
    inside = F.unfold(q.new_ones(1, 1, h, w), window, padding=r).view(1, 1, kk, n) > 0.5
    attn = torch.softmax(scores.masked_fill(~inside, float("-inf")), dim=2)  # B, G, kk, N
    v_win = F.unfold(v, window, padding=r).view(b, g, c // g, kk, n)
    out = (attn.unsqueeze(2) * v_win).sum(3)  # B, G, C/G, N
    return out.reshape(b, c, h, w)



EPS = 1e-6  # the official code's epsilon, both for the L1 over N and the L2 over C


def l2_normalise(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t / (1e-6 + ||t||)`` along ``dim`` (EMANet's ``_l2norm``)."""
    return t / (EPS + t.norm(dim=dim, keepdim=True))


def l1_over(t: torch.Tensor, dim: int) -> torch.Tensor:
    """``t / (1e-6 + sum t)`` along ``dim`` (EMANet's normalisation of z over the pixels)."""
    return t / (EPS + t.sum(dim=dim, keepdim=True))



def em_step(x: torch.Tensor, mu: torch.Tensor, gather: str = "em",
            descriptor_norm: str = "l2") -> tuple[torch.Tensor, torch.Tensor]:
    """One EM iteration. ``x``: (B, C, N) features, ``mu``: (B, C, K) bases.

    Returns ``(mu_new, z)``: mu_new (B, C, K) (unit-norm columns with ``descriptor_norm='l2'``),
    and the E-step responsibilities z (B, N, K), a softmax over K for every pixel. ``gather``
    says how the M-step pools the pixels: ``em`` with z L1-normalised over N (EMANet), ``softmax``
    with the logits softmax-normalised over N (A2Net's gathering).
    """
    logits = x.transpose(1, 2) @ mu  # B, N, K
    z = torch.softmax(logits, dim=2)  # E-step
    weights = l1_over(z, dim=1) if gather == "em" else torch.softmax(logits, dim=1)
    mu = x @ weights  # M-step: B, C, K
    return (l2_normalise(mu, dim=1) if descriptor_norm == "l2" else mu), z


def em_iterations(x: torch.Tensor, mu: torch.Tensor, T: int, gather: str = "em",
                  descriptor_norm: str = "l2") -> tuple[torch.Tensor, torch.Tensor]:
    """``T >= 1`` EM iterations from ``mu``; returns the last ``(mu, z)`` (no grad handling here)."""
    if T < 1:
        raise ValueError(f"EM needs T >= 1 iterations, got {T}")
    z = None
    for _ in range(T):
        mu, z = em_step(x, mu, gather, descriptor_norm)
    return mu, z

