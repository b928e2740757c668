"""Recording every softmax of a forward pass, for the doctor's check of a block's maps at
initialisation.

:func:`recording_softmax` patches ``torch.softmax``, ``torch.nn.functional.softmax``,
``torch.Tensor.softmax`` and ``torch.nn.functional.scaled_dot_product_attention`` for the length
of a ``with`` and keeps one :class:`MapStats` per map: the mean largest weight of a row, its
entropy normalised by the log of its positive entries, the weight of a position on itself (square
maps) and the call site in the block's code. The map inside ``scaled_dot_product_attention`` is
recomputed a block of queries at a time for the statistics. On CUDA the Triton kernels compute
their softmax inside the kernel, out of the recorder's sight. Re-exported by :mod:`ablate.doctor`.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, replace

import torch


@dataclass
class MapStats:
    """Row statistics of one softmax map: ``rows`` rows of ``size`` entries."""

    shape: tuple
    size: int
    rows: int
    max_weight: float  # mean over rows of the largest weight
    entropy: float  # mean over rows of the entropy / log(positive entries)
    self_weight: float | None  # mean weight of a position on itself (square maps), else None
    where: str = ""  # the call site: file:line of the code that called the softmax


def map_stats(p: torch.Tensor, dim: int, self_axis: int | None = None, chunk: int = 4096) -> MapStats | None:
    """Statistics of softmax output ``p`` along ``dim``; None for rows of one entry. ``self_axis``:
    the axis of the query positions when the map is square over positions (its diagonal is the
    weight of each position on itself)."""
    p = p.detach().float()
    dim = dim % p.dim()
    n = p.shape[dim]
    if n < 2 or p.numel() == 0:
        return None
    square = self_axis is not None and p.shape[self_axis % p.dim()] == n
    rows = p.movedim(dim, -1)
    diag = torch.diagonal(p, dim1=self_axis % p.dim(), dim2=dim) if square else None
    rows = rows.reshape(-1, n)
    tot_max = tot_ent = 0.0
    for part in rows.split(chunk):
        tot_max += float(part.amax(-1).sum())
        tot_ent += float(_normalised_entropy(part).sum())
    count = rows.shape[0]
    self_weight = float(diag.float().mean()) if diag is not None else None
    return MapStats(tuple(p.shape), n, count, tot_max / count, tot_ent / count, self_weight)


def _normalised_entropy(rows: torch.Tensor) -> torch.Tensor:
    """Entropy of each row over log(its positive entries): 1 for uniform over the entries a row
    may use (masked entries are exactly 0), 0 for one-hot."""
    positive = (rows > 0).sum(-1)
    ent = -(rows * rows.clamp_min(1e-30).log()).sum(-1)
    return torch.where(positive > 1, ent / positive.clamp_min(2).float().log(), torch.zeros_like(ent))


def _sdpa_stats(q, k, attn_mask=None, is_causal=False, scale=None, chunk: int = 1024) -> MapStats | None:
    """The statistics of the softmax map inside ``scaled_dot_product_attention(q, k, ...)``,
    computed a block of queries at a time (the N x N map is never held whole)."""
    q, k = q.detach().float(), k.detach().float()
    nq, nk = q.shape[-2], k.shape[-2]
    if nk < 2:
        return None
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    tot_max = tot_ent = tot_self = 0.0
    count = 0
    for start in range(0, nq, chunk):
        s = (q[..., start:start + chunk, :] @ k.transpose(-1, -2)) * scale
        if attn_mask is not None:
            m = attn_mask[..., start:start + chunk, :] if attn_mask.shape[-2] == nq else attn_mask
            s = s.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else s + m
        if is_causal:
            rows = torch.arange(start, start + s.shape[-2], device=s.device)[:, None]
            s = s.masked_fill(torch.arange(nk, device=s.device)[None, :] > rows, float("-inf"))
        p = _ORIGINAL["torch"](s, dim=-1).reshape(-1, s.shape[-2], nk)
        tot_max += float(p.amax(-1).sum())
        tot_ent += float(_normalised_entropy(p.reshape(-1, nk)).sum())
        if nq == nk:
            tot_self += float(torch.diagonal(p, offset=start, dim1=-2, dim2=-1).sum())
        count += p.shape[0] * p.shape[1]
    return MapStats((*q.shape[:-1], nk), nk, count, tot_max / count, tot_ent / count,
                    tot_self / count if nq == nk else None)


_ORIGINAL: dict = {}
_DOCTOR = __name__.rsplit("_", 1)[0]  # ablate.doctor: this module and its siblings are not the block's code


def _call_site() -> str:
    """``file.py:line`` of the nearest caller outside torch and the doctor's modules (the block's code)."""
    frame = sys._getframe(1)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module != _DOCTOR and not module.startswith(_DOCTOR + "_") and module.split(".")[0] != "torch":
            return f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
        frame = frame.f_back
    return ""


class _Recorder:
    """One recording: the maps seen so far, how deep inside a recorded call we are (a softmax
    called inside another is recorded once) and torch's own functions."""

    def __init__(self, saved: dict):
        self.records: list[MapStats] = []
        self.depth = 0
        self.saved = saved

    def softmax(self, fn, dim_pos: int):
        """``fn`` (a softmax taking ``dim`` at position ``dim_pos`` or as a keyword), recording its map."""
        def wrapped(*args, **kwargs):
            self.depth += 1
            try:
                out = fn(*args, **kwargs)
            finally:
                self.depth -= 1
            dim = kwargs.get("dim", args[dim_pos] if len(args) > dim_pos else None)
            if self.depth == 0 and dim is not None and isinstance(out, torch.Tensor):
                self.depth += 1
                try:
                    with torch.no_grad():
                        d = dim % out.dim()
                        stats = map_stats(out, d, self_axis=d - 1 if d >= 2 or (d == 1 and out.dim() == 2) else None)
                finally:
                    self.depth -= 1
                if stats is not None:
                    self.records.append(replace(stats, where=_call_site()))
            return out
        return wrapped

    def sdpa(self, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        """``scaled_dot_product_attention``, recording the statistics of its map."""
        self.depth += 1
        try:
            out = self.saved["sdpa"](query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                                     scale=scale, **kwargs)
            if self.depth == 1:
                with torch.no_grad():
                    stats = _sdpa_stats(query, key, attn_mask, is_causal, scale)
                if stats is not None:
                    self.records.append(replace(stats, where=_call_site()))
        finally:
            self.depth -= 1
        return out


@contextlib.contextmanager
def recording_softmax():
    """Record the statistics of every softmax computed inside the ``with``: yields a list that
    gets one :class:`MapStats` per map. Patches ``torch.softmax``, ``torch.nn.functional.softmax``,
    ``torch.Tensor.softmax`` and ``torch.nn.functional.scaled_dot_product_attention`` (whose map is
    recomputed for the statistics); a softmax called inside another is recorded once."""
    import torch.nn.functional as F

    own_tensor_softmax = "softmax" in torch.Tensor.__dict__
    saved = {"torch": torch.softmax, "F": F.softmax, "Tensor": torch.Tensor.softmax,
             "sdpa": F.scaled_dot_product_attention}
    _ORIGINAL.update(saved)
    recorder = _Recorder(saved)
    torch.softmax = recorder.softmax(saved["torch"], 1)
    F.softmax = recorder.softmax(saved["F"], 1)
    torch.Tensor.softmax = recorder.softmax(saved["Tensor"], 1)
    F.scaled_dot_product_attention = recorder.sdpa
    try:
        yield recorder.records
    finally:
        torch.softmax, F.softmax = saved["torch"], saved["F"]
        if own_tensor_softmax:
            torch.Tensor.softmax = saved["Tensor"]
        else:  # the method lives on torch._C.TensorBase: remove our wrapper, add nothing to Tensor
            del torch.Tensor.softmax
        F.scaled_dot_product_attention = saved["sdpa"]
