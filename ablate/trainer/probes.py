"""Attention mass on the cue: how much of its attention a pixel puts on the global_cue task's cue.

On ``global_cue`` (``ablate/data/synthetic.py``) one small marker decides every object pixel's
class, so a block that solves the task must move the cue's features to the objects. For a block
with an explicit attention map (a softmax over the feature map's N = H*W positions) the probe
measures, on a fixed batch of validation images, the mean over rows of the map of the weight
that lands on the cue: 1 when every row looks only at the cue, the cue's area fraction
(cue_side² / size², 1/64 by default) when attention is uniform.

The maps are captured without touching the blocks: while the block runs, :class:`AttentionCapture`
wraps ``torch.softmax``, ``torch.nn.functional.softmax``, ``Tensor.softmax`` and
``F.scaled_dot_product_attention`` (whose weights it recomputes from q, k, the mask and the
scale) and keeps every result normalised over a dimension of size N whose leading dimension is
the batch. So it sees the Non-local family, DANet's position module, OCNet, GCNet's and DNL's
query-independent maps, A2Net's gathering maps, and so on. A rows-by-N map whose N happens to
equal another softmax width (e.g. DANet's channel map when C = H*W) is indistinguishable and
counted too.

Sparse patterns whose softmax runs over a band have no N-wide map; for the two that go through
the public functions of :mod:`ablate_kernels` (``criss_cross_attention``: CCNet and the
``criss_cross`` pattern; ``local_window_attention``: the ``local_window`` pattern) the capture
uses that their output is linear in the values with rows that sum to 1: called again with the
cue mask as the values, they return each query's mass on the cue directly. Blocks whose
attention is split over groups (ISA, the ``interlaced`` pattern), DGMN's samples, and blocks
without a softmax over positions give None.

The cue mask is taken to the feature map's resolution by area averaging (a feature cell that
covers half cue pixels counts for half), so a row's mass is Σ_j a_ij · m_j. Rows are whatever
the mechanism normalises over positions: query pixels for pairwise maps (all of them, cue and
background included), the single map of a query-independent block, the K descriptors of A2Net.
The value per epoch is the mean over the captured maps (several with R passes) of the mean
over their rows and the probe's images.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..data.synthetic import IGNORE_INDEX
from ..config.seeds import derive

PROBE_IMAGES = 16  # the first validation images make the fixed probe batch


# public attention functions whose output is linear in the values v (B, c, H, W), rows summing to 1
_LINEAR_IN_V = (("ablate_kernels.criss_cross", "criss_cross_attention"),
                ("ablate_kernels.local_window", "local_window_attention"))


class AttentionCapture:
    """Context manager: while active, softmax results normalised over ``n_positions`` entries
    along a non-batch dimension, for a leading batch dimension of ``batch``, are kept in
    ``maps`` as (batch, rows, n_positions) float tensors. Nested calls (``F.softmax`` calls
    ``Tensor.softmax``) are kept once. With ``cue`` (batch, n_positions), each call of a
    :data:`_LINEAR_IN_V` function is run again with the cue as its values and the result, each
    query's mass on the cue, is kept in ``masses`` as (batch, rows)."""

    def __init__(self, n_positions: int, batch: int, cue: torch.Tensor | None = None):
        self.n, self.batch, self.cue = n_positions, batch, cue
        self.maps: list[torch.Tensor] = []
        self.masses: list[torch.Tensor] = []
        self._depth = 0
        self._saved: list = []

    def _keep(self, out: torch.Tensor, dim) -> None:
        if dim is None or not isinstance(out, torch.Tensor) or out.ndim < 2:
            return
        dim = dim % out.ndim
        if dim == 0 or out.shape[dim] != self.n or out.shape[0] != self.batch:
            return
        self.maps.append(out.detach().movedim(dim, -1).reshape(self.batch, -1, self.n).float())

    def _wrap_softmax(self, fn):
        def wrapped(input, *args, **kwargs):
            self._depth += 1
            try:
                out = fn(input, *args, **kwargs)
            finally:
                self._depth -= 1
            if self._depth == 0:
                self._keep(out, kwargs.get("dim", args[0] if args else None))
            return out
        return wrapped

    def _wrap_sdpa(self, fn, softmax):
        def wrapped(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
            out = fn(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
                     **kwargs)
            if self._depth == 0 and key.shape[-2] == self.n and query.shape[0] == self.batch:
                s = scale if scale is not None else 1 / math.sqrt(query.shape[-1])
                logits = (query.float() @ key.float().transpose(-2, -1)) * s
                if is_causal:
                    keep = torch.ones(logits.shape[-2:], dtype=torch.bool, device=logits.device).tril()
                    logits = logits.masked_fill(~keep, float("-inf"))
                if attn_mask is not None:
                    logits = (logits.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool
                              else logits + attn_mask.float())
                self._depth += 1
                try:
                    self._keep(softmax(logits, -1), -1)
                finally:
                    self._depth -= 1
            return out
        return wrapped

    def _wrap_linear(self, fn):
        def wrapped(q, k, v, *args, **kwargs):
            self._depth += 1  # what runs inside (a reference's band softmax) is not a map over positions
            try:
                out = fn(q, k, v, *args, **kwargs)
                if self._depth == 1 and self.cue is not None and v.ndim == 4 and v.shape[0] == self.batch \
                        and v.shape[-2] * v.shape[-1] == self.n:
                    cue = self.cue.reshape(self.batch, 1, *v.shape[-2:]).to(v.device, v.dtype)
                    mass = fn(q, k, cue.expand_as(v).contiguous(), *args, **kwargs)
                    self.masses.append(mass.detach().float().flatten(1))
            finally:
                self._depth -= 1
            return out
        return wrapped

    def __enter__(self):
        import importlib

        own = "softmax" in torch.Tensor.__dict__
        self._saved = [(torch, "softmax", torch.softmax), (F, "softmax", F.softmax),
                       (torch.Tensor, "softmax", torch.Tensor.__dict__["softmax"] if own else None),
                       (F, "scaled_dot_product_attention", F.scaled_dot_product_attention)]
        tensor_softmax = torch.Tensor.softmax
        torch.softmax = self._wrap_softmax(torch.softmax)
        F.softmax = self._wrap_softmax(F.softmax)
        torch.Tensor.softmax = self._wrap_softmax(tensor_softmax)
        F.scaled_dot_product_attention = self._wrap_sdpa(F.scaled_dot_product_attention, self._saved[0][2])
        for module_name, name in _LINEAR_IN_V:
            try:
                module = importlib.import_module(module_name)
                fn = getattr(module, name)
            except (ImportError, AttributeError):
                continue
            self._saved.append((module, name, fn))
            setattr(module, name, self._wrap_linear(fn))
        return self

    def __exit__(self, *exc):
        for owner, name, original in self._saved:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
        self._saved = []
        return False


def cue_mass(maps: list[torch.Tensor], cue: torch.Tensor, masses: list[torch.Tensor] = ()) -> float | None:
    """Mean attention mass on the cue: ``maps`` (B, rows, N) row-stochastic, ``cue`` (B, N) the
    fraction of each position covered by the cue, ``masses`` (B, rows) masses already computed.
    The mean over maps and masses of each one's mean; None when there is none."""
    per_map = [torch.einsum("brn,bn->br", m, cue.to(m.device, m.dtype)).mean() for m in maps]
    per_map += [m.mean() for m in masses]
    return float(torch.stack(per_map).mean()) if per_map else None


def cue_fraction(labels: torch.Tensor, size: tuple[int, int], ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """(B, h*w): the fraction of each cell of an h x w grid covered by the cue (global_cue's
    cue pixels are its only ``ignore_index`` pixels), by area averaging."""
    mask = (labels == ignore_index).float()[:, None]
    return F.adaptive_avg_pool2d(mask, size).flatten(1)


def make_cue_probe(images: torch.Tensor, labels: torch.Tensor, seed: int | None = None):
    """A probe for :class:`ablate.models.segmenter.SegmentationModule`: ``probe(model)`` runs
    ``model.features`` and ``model.attention`` on ``images`` and returns the cue mass (None when
    the block has no map over positions). Runs in a forked generator state seeded from
    ``derive(seed, "probe")``, so it never moves the training's random streams."""

    def probe(model) -> float | None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
        x = images.to(device, dtype)  # a "16-true" / "bf16-true" trial holds half-precision weights
        devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if seed is not None:
                torch.manual_seed(derive(seed, "probe"))
            f = model.features(x)
            h, w = f.shape[-2:]
            cue = cue_fraction(labels.to(device), (h, w))
            with AttentionCapture(h * w, len(x), cue) as cap:
                model.attention(f)
        return cue_mass(cap.maps, cue, cap.masses)

    return probe
