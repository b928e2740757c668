"""Attention maps through one hook: every block hands what it attends with to :func:`record`.

A block calls ``record(name, tensor, kind, grid)`` where it has its affinity (or the mechanism's
equivalent of one) in hand; inside ``with recording() as maps:`` each call appends a :class:`Map`
(the tensor detached, float32, on the CPU) to ``maps``, in call order. Outside a recording
:func:`record` returns at once (one list lookup), and a block computes a map it does not need
for its output (a map that ``scaled_dot_product_attention`` or a kernel never materialises)
only under ``if active():``, so training pays nothing. Recording never changes what a block
computes: the extra maps are built from tensors the block already has, without grad.

Kinds (B the batch; N = h * w positions of ``grid``, row-major):

======================  ============  ============================================================
kind                    shape         what it is
======================  ============  ============================================================
``pairwise``            (B, N, N)     row = query position, column = key position: the weights a
                                      query gives every position (zero where it cannot look)
``maps``                (B, M, N)     M maps over the positions: nodes, bases, descriptors,
                                      regions, or one context / gate map (M = 1)
``channel``             (B, C)        one weight per channel (a channel gate)
``channel_matrix``      (B, C, C)     row = output channel, column = the channels it mixes
``affine``              (B, 2, 3)     an affine sampling transform of the grid (output -> input,
                                      [-1, 1] units, ``align_corners=False``)
======================  ============  ============================================================

:data:`DRAWN` says, per block class, what it records and so what a report draws;
:func:`at_query` turns a map into the picture for one query pixel. A recording nested inside
another receives the calls alone (the innermost recording is the one that records): ISA reads
its group attentions that way and records them once, as maps over the whole grid.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

KINDS = ("pairwise", "maps", "channel", "channel_matrix", "affine")
SPATIAL = ("pairwise", "maps", "affine")  # kinds drawn over the image; the others are drawn as they are

_RECORDINGS: list[list] = []  # the active recordings, innermost last

# block class -> what it records and what the report draws (tests/attention/test_attention_maps.py holds every preset to it)
DRAWN: dict[str, str] = {
    "NoAttention": "nothing: there is no block (the control)",
    "NonLocalBlock": "`affinity` (pairwise, one per pass): the normalised affinity, softmax(θ·φ) or (θ·φ)/N or the "
                     "concatenation form's ReLU(w·[θ;φ])/N; with a sparse pattern the softmax over the pattern's "
                     "pixels (zero elsewhere)",
    "DANetBlock": "`position` (pairwise): the position module's softmax(q·k); `channel` (channel_matrix): the channel "
                  "module's C x C attention",
    "OCNetBlock": "`affinity` (pairwise): the object context's softmax; pyramid: `affinity_sxs` per stage, the "
                  "softmax inside each region (zero across regions); ASP: on the 2x max-pooled grid",
    "CCNetBlock": "`affinity` (pairwise, one per recurrence): the criss-cross softmax, non-zero on the query's row and "
                  "column only",
    "ISABlock": "`long_range` and `short_range` (pairwise): the softmax inside the query's long-range group (pixels "
                "at its offset in every partition) and inside its partition (padding pixels left out)",
    "LocalRelationBlock": "`window` (pairwise): the softmax over the k x k window with the geometry prior, mean over "
                          "the channel groups",
    "GlobalContextBlock": "`context` (maps, M = 1): the query-independent softmax over positions that pools the "
                          "context (uniform for pooling: avg)",
    "DisentangledNonLocalBlock": "`pairwise` (pairwise): the whitened pairwise softmax; `unary` (maps, M = 1): the "
                                 "query-independent unary softmax",
    "CGNLBlock": "`context_terms` (maps, one per channel group): each position's term p·g of the compact sum "
                 "Σ_b p_b g_b (the dot kernel's whole context; the Gaussian kernel's first-order term); CGNL has no "
                 "pixel-to-pixel map",
    "PSANetBlock": "`collect` and/or `distribute` (pairwise, on the block's grid x grid map): the point-wise "
                   "softmax of each target pixel over the source pixels",
    "DGMNBlock": "`samples` (pairwise): the softmax weights of the K sampled neighbours placed at their (moved) "
                 "positions, bilinear, mean over the channel groups",
    "LowRankBlock": "`projection` (maps, K nodes): GloRe's projection B (no softmax), the EM responsibilities z^T "
                    "or the pooling membership, by mapping",
    "EMABlock": "`responsibilities` (maps, K bases): z^T, each pixel's softmax over the bases (the distribution "
                "map when the maps are separate)",
    "A2Block": "`gather` (maps, K descriptors): each descriptor's pooling weights over positions; `distribute` "
               "(maps): each pixel's softmax over the descriptors",
    "SGRBlock": "`votes` (maps, K nodes): each pixel's softmax vote over the nodes; `mapping` (maps): the "
                "node-to-pixel compatibility softmax",
    "GCUBlock": "`assignment` (maps, K vertices): the soft assignment Q^T to the anchors",
    "LatentGNNBlock": "`visible_to_latent` and `latent_to_visible` (maps, K latent nodes): the two kernels' "
                      "normalised weights",
    "APCBlock": "`affinity_sxs` (maps, s*s regions, one per scale): each pixel's sigmoid affinity to each pooled "
                "region",
    "SEBlock": "`channel` (channel): the sigmoid channel gate; no spatial map",
    "CBAMBlock": "`channel` (channel): the channel gate; `spatial` (maps, M = 1): the spatial gate",
    "STNBlock": "`theta` (affine): the predicted affine transform; drawn as where the query samples from",
}


@dataclass
class Map:
    """One recorded map: its name (the block's), kind (:data:`KINDS`), tensor and grid (h, w)."""

    name: str
    kind: str
    tensor: torch.Tensor
    grid: tuple[int, int] | None = None


def active() -> bool:
    """Whether a recording is open (a block computes a map it does not otherwise need only then)."""
    return bool(_RECORDINGS)


@contextlib.contextmanager
def recording():
    """Record the maps the blocks hand to :func:`record` inside the ``with``: yields the list."""
    maps: list[Map] = []
    _RECORDINGS.append(maps)
    try:
        yield maps
    finally:
        _RECORDINGS.remove(maps)


def _check(name: str, kind: str, shape: tuple, grid) -> None:
    if kind not in KINDS:
        raise ValueError(f"map {name!r}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    n = None if grid is None else grid[0] * grid[1]
    want = {"pairwise": (3, lambda s: s[1] == s[2] == n), "maps": (3, lambda s: s[2] == n),
            "channel": (2, lambda s: True), "channel_matrix": (3, lambda s: s[1] == s[2]),
            "affine": (3, lambda s: s[1:] == (2, 3) and n is not None)}[kind]
    if len(shape) != want[0] or not want[1](shape):
        raise ValueError(f"map {name!r} of kind {kind!r} has shape {shape} (grid {grid}); see ablate.attention.maps")


def record(name: str, tensor: torch.Tensor, kind: str = "pairwise", grid: tuple[int, int] | None = None) -> None:
    """Hand a map to the innermost open recording; nothing when none is open."""
    if not _RECORDINGS:
        return
    grid = None if grid is None else (int(grid[0]), int(grid[1]))
    _check(name, kind, tuple(tensor.shape), grid)
    _RECORDINGS[-1].append(Map(name, kind, tensor.detach().float().cpu(), grid))


# -- building dense maps from what sparse mechanisms hold --------------------------------------------------

def masked_softmax(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of ``scores`` where ``allowed`` (broadcast), zero elsewhere."""
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1).nan_to_num(0.0)


def scatter_groups(sim: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """(B, n, n) zeros with ``sim[:, g]`` (B, G, Q, Q) placed at rows and columns ``ids[g]`` (G, Q):
    attention inside groups of positions as one map over all of them."""
    dense = sim.new_zeros(sim.shape[0], n, n)
    dense[:, ids[:, :, None], ids[:, None, :]] = sim
    return dense


def splat(weights: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(B, N, N): for each query pixel, its K weights (B, K, H, W) put at its K sampling positions
    (B, K, H, W, 2; absolute (y, x) pixel coordinates) with bilinear weights, as ``grid_sample``
    reads them (corners outside the image dropped)."""
    b, k, h, w = weights.shape
    n = h * w
    dense = weights.new_zeros(b, n, n)
    query = torch.arange(n, device=weights.device).view(1, 1, h, w).expand(b, k, h, w)
    base = positions.floor()
    frac = positions - base
    for dy in (0, 1):
        for dx in (0, 1):
            y, x = base[..., 0].long() + dy, base[..., 1].long() + dx
            wy = frac[..., 0] if dy else 1 - frac[..., 0]
            wx = frac[..., 1] if dx else 1 - frac[..., 1]
            inside = (y >= 0) & (y < h) & (x >= 0) & (x < w)
            value = (weights * wy * wx).masked_fill(~inside, 0.0)
            key = (y.clamp(0, h - 1) * w + x.clamp(0, w - 1))
            flat = dense.view(b, n * n)
            flat.scatter_add_(1, (query * n + key).reshape(b, -1), value.reshape(b, -1))
    return dense


# -- the picture for one query pixel --------------------------------------------------------------------------

def _cell(q: float, size: int) -> int:
    return min(size - 1, max(0, int(q * size)))


def at_query(m: Map, b: int, qy: float, qx: float) -> tuple[torch.Tensor, str]:
    """What to draw of map ``m`` for image ``b`` and the query at (``qy``, ``qx``), fractions of
    the image's height and width: a 2-D tensor and a few words on what it is. Spatial kinds
    (:data:`SPATIAL`) give an (h, w) map over the grid; the others give their weights as they are."""
    t = m.tensor[b]
    if m.kind == "channel":
        return t[None, :], f"{m.name}: one weight per channel (not per pixel)"
    if m.kind == "channel_matrix":
        return t, f"{m.name}: channel x channel attention (not per pixel)"
    h, w = m.grid
    i, j = _cell(qy, h), _cell(qx, w)
    if m.kind == "pairwise":
        return t[i * w + j].view(h, w), f"{m.name}: the query's weights over positions"
    if m.kind == "maps":
        if t.shape[0] == 1:
            return t[0].view(h, w), f"{m.name}: one map, the same for every query"
        k = int(t[:, i * w + j].argmax())
        return t[k].view(h, w), f"{m.name}: map {k + 1} of {t.shape[0]}, the largest at the query"
    return _affine_at(t, h, w, i, j), f"{m.name}: where the query samples from (bilinear)"


def _affine_at(theta: torch.Tensor, h: int, w: int, i: int, j: int) -> torch.Tensor:
    """(h, w) bilinear weights of the input pixels output pixel (i, j) reads under ``theta`` (2, 3)."""
    xn, yn = (2 * j + 1) / w - 1, (2 * i + 1) / h - 1
    sx, sy = (theta @ torch.tensor([xn, yn, 1.0])).tolist()
    y, x = ((sy + 1) * h - 1) / 2, ((sx + 1) * w - 1) / 2  # pixel coordinates, as grid_sample reads them
    out = torch.zeros(h, w)
    y0, x0 = math.floor(y), math.floor(x)
    for dy, wy in ((0, 1 - (y - y0)), (1, y - y0)):
        for dx, wx in ((0, 1 - (x - x0)), (1, x - x0)):
            if 0 <= y0 + dy < h and 0 <= x0 + dx < w:
                out[y0 + dy, x0 + dx] += wy * wx
    return out
