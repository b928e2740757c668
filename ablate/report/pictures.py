"""What the report shows as images: attention maps, predictions and failures, from the weights a
finished trial kept (``final.pt``, :func:`ablate.trainer.checkpoints.save_final`).

For each cell the report rebuilds the model of a few of its trials from the stored configuration
and weights: **seed 0** (the study's first seed), the cell's first **learned** seed and its first
**floor** seed (against the learned threshold of the report's table,
:mod:`ablate.stats.outcomes`). On fixed validation images (the split's first, the same for every
cell of a task) it records what the block attends with (:mod:`ablate.attention.maps`) for a few
query pixels: the centre pixels of the largest objects, which on ``global_cue`` must read the
cue the task knows (its unscored pixels, outlined in every panel); it predicts the grid's images;
and from the per-image counts a trial stored (:mod:`ablate.models.image_counts`) it finds the
validation images seed 0 segments worst and predicts those (the failure gallery).

:func:`collect` returns None when no finished trial of the study names final weights (trials
that predate them, or ran with ``train.checkpoint_every: 0``): such a report renders exactly as
before. A trial whose weights file is gone (its run folder deleted) is named in the section.
The drawing is :mod:`ablate.report.drawings`; the words are :func:`lines`.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

GRID_IMAGES = 4  # the prediction grid: the validation split's first images
MAP_IMAGES = 2  # attention maps: the first grid images with an object
QUERIES = 2  # query pixels per image: the centres of its largest objects
FAILURES = 4  # the failure gallery: the lowest-mIoU validation images of seed 0
MAX_MAPS = 3  # recorded maps drawn per trial (a block with more says how many it left out)
WEIGHTS = "final_weights"  # the trial attribute that names the weights file


@dataclass
class Trial:
    """One drawn trial: its seed, roles (seed 0 / learned / floor), value, maps and predictions."""

    seed: int
    roles: list[str]
    value: float | None
    maps: list = field(default_factory=list)  # ablate.attention.maps.Map, on the map images
    left_out: int = 0  # recorded maps not drawn (beyond MAX_MAPS)
    pred: np.ndarray | None = None  # (GRID_IMAGES, H, W) predictions on the grid images


@dataclass
class CellPictures:
    """A cell's pictures: its validation images, the drawn trials and its failure gallery."""

    title: str
    key: str
    mechanism: str
    block: str  # the block's class name (ablate.attention.maps.DRAWN)
    threshold: float | None
    images: np.ndarray  # (GRID_IMAGES, 3, H, W)
    labels: np.ndarray  # (GRID_IMAGES, H, W)
    map_images: list[int]  # indices into images
    queries: dict[int, list[tuple[float, float]]]  # image index -> query pixels (y, x), fractions
    class_names: tuple
    n_classes: int
    trials: list[Trial] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # words on the trials that could not be drawn
    failures: dict | None = None  # seed, index, miou, images, labels, pred


def has_weights(data: dict) -> bool:
    """Whether any finished trial of the collected data names final weights."""
    return any(WEIGHTS in r for recs in data.get("records", {}).values() for r in recs)


def collect(study, data: dict, tab: dict) -> list[CellPictures] | None:
    """Every cell's pictures, in the table's order; None when no trial kept final weights."""
    if not has_weights(data):
        return None
    thresholds = (tab.get("info") or {}).get("thresholds") or {}
    out = []
    for row in tab["rows"]:
        recs = {r.get("seed"): r for r in data["records"].get(row["key"], [])}
        if not recs:
            continue
        thr = getattr(thresholds.get(row["key"]), "value", None)
        out.append(_cell(study, row, recs, data["values"].get(row["key"], {}), thr))
    return out


def chosen_seeds(seeds: list[int], values: dict, threshold: float | None, first: int) -> list[tuple[int, list[str]]]:
    """(seed, roles) to draw: seed 0 (``first``, else the lowest seed), the lowest learned seed and
    the lowest floor seed (value at or above / below ``threshold``); one entry per seed."""
    seeds = sorted(seeds)
    picks = [(first if first in seeds else seeds[0], "seed 0" if first in seeds else f"seed {seeds[0]}")]
    if threshold is not None:
        learned = [s for s in seeds if values.get(s) is not None and values[s] >= threshold]
        floor = [s for s in seeds if values.get(s) is not None and values[s] < threshold]
        picks += [(learned[0], "learned")] if learned else []
        picks += [(floor[0], "floor")] if floor else []
    out: dict[int, list[str]] = {}
    for seed, role in picks:
        out.setdefault(seed, []).append(role)
    return list(out.items())


def _cell(study, row: dict, recs: dict, values: dict, threshold: float | None) -> CellPictures:
    from ..attention import get_preset
    from ..config.trial import TrialConfig

    config = TrialConfig.of(json.loads(next(iter(recs.values()))["config"]))
    images, labels, n_classes, names = _validation(config)
    block = get_preset(config.mechanism).block.__name__
    if images is None:
        pics = CellPictures(row["title"], row["key"], row["mechanism"], block, threshold, np.zeros((0, 3, 1, 1)),
                            np.zeros((0, 1, 1)), [], {}, names, n_classes)
        pics.missing.append("pictures are drawn for in-memory tasks only (this cell trains on a real dataset)")
        return pics
    pics = CellPictures(row["title"], row["key"], row["mechanism"], block, threshold, images[:GRID_IMAGES],
                        labels[:GRID_IMAGES], [], {}, names, n_classes)
    pics.map_images = [i for i in range(len(pics.labels)) if _objects(pics.labels[i]).any()][:MAP_IMAGES]
    pics.queries = {i: query_pixels(pics.labels[i]) for i in pics.map_images}
    for seed, roles in chosen_seeds(list(recs), values, threshold, study.seeds[0] if study.seeds else 0):
        model = _model(recs[seed], pics, seed, roles)
        if model is None:
            continue
        trial = Trial(seed, roles, values.get(seed))
        trial.maps, trial.left_out, trial.pred = _run(model, pics)
        pics.trials.append(trial)
        if pics.failures is None:
            pics.failures = _failures(model, recs[seed], seed, images, labels)
    return pics


def _validation(config):
    """(validation images, labels, class count, class names) of an in-memory task; Nones for a real dataset."""
    from ..data.lightning import tensors
    from ..data.real import is_real
    from ..data.synthetic import CLASS_NAMES

    if is_real(config.data):
        return None, None, 0, ()
    _, (xv, yv), n_classes, spec = tensors(config.data)
    return xv.numpy(), yv.numpy(), n_classes, CLASS_NAMES.get(getattr(spec, "task", None), ())


def _model(record: dict, pics: CellPictures, seed: int, roles: list[str]):
    """The trial's model with its final weights, in eval mode; None (and a note) without them."""
    import torch

    from ..config.trial import TrialConfig, fields_dict
    from ..models.segmenter import Segmenter

    path = record.get(WEIGHTS)
    who = f"seed {seed} ({', '.join(r for r in roles if not r.startswith('seed'))})" if len(roles) > 1 or \
        not roles[0].startswith("seed") else f"seed {seed}"
    if not path:
        pics.missing.append(f"{who}: the trial kept no final weights (it predates them or ran with "
                            "`train.checkpoint_every: 0`)")
        return None
    if not Path(path).is_file():
        pics.missing.append(f"{who}: its weights `{path}` are gone (the run folder was moved or deleted)")
        return None
    try:  # a report is never stopped by a picture: a model that cannot be rebuilt is named instead
        config = TrialConfig.of(json.loads(record["config"]))
        model = Segmenter(pics.n_classes, config.backbone, config.mechanism, config.args, fields_dict(config.head))
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["state_dict"])
    except Exception as e:  # noqa: BLE001 - e.g. weights of a block whose code has changed since
        pics.missing.append(f"{who}: its model could not be rebuilt from `{path}` ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160] if str(e) else ''})")
        return None
    return model.eval()


def _run(model, pics: CellPictures):
    """(recorded maps on the map images, maps left out, predictions on the grid images)."""
    import torch

    from ..attention import maps as attention_maps
    from ..trainer.tracking import predict

    pred, _ = predict(model, torch.from_numpy(pics.images))
    recorded = []
    if pics.map_images:
        with torch.no_grad(), attention_maps.recording() as recorded:
            model(torch.from_numpy(pics.images[pics.map_images]).float())
    return recorded[:MAX_MAPS], max(0, len(recorded) - MAX_MAPS), pred.numpy()


def image_miou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """Per image, the mean over the classes present (union > 0) of intersection / union."""
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
    present = (union > 0).sum(1)
    return np.where(present > 0, np.nansum(iou, 1) / np.maximum(present, 1), np.nan)


def image_miou_of(pred: np.ndarray, label: np.ndarray, n_classes: int, ignore_index: int = 255) -> float:
    """One image's mIoU (classes present in prediction or truth; unscored pixels left out)."""
    keep = label != ignore_index
    p, t = pred[keep], label[keep]
    inter = np.array([np.sum((p == k) & (t == k)) for k in range(n_classes)])
    union = np.array([np.sum((p == k) | (t == k)) for k in range(n_classes)])
    return float(image_miou(inter[None], union[None])[0])


def _failures(model, record: dict, seed: int, images, labels) -> dict | None:
    """The validation images the trial segments worst (from its stored per-image counts), predicted."""
    import torch

    from ..models.image_counts import ATTR, decode
    from ..trainer.tracking import predict

    attr = record.get(ATTR)
    if not isinstance(attr, dict):
        return None
    inter, union = decode(attr)
    miou = image_miou(inter, union)
    order = [int(i) for i in np.argsort(np.where(np.isnan(miou), np.inf, miou), kind="stable")[:FAILURES]
             if i < len(images)]
    pred, _ = predict(model, torch.from_numpy(images[order]))
    return {"seed": seed, "index": order, "miou": [float(miou[i]) for i in order], "images": images[order],
            "labels": labels[order], "pred": pred.numpy()}


def _objects(label: np.ndarray) -> np.ndarray:
    from ..data.synthetic import IGNORE_INDEX

    return (label > 0) & (label != IGNORE_INDEX)


def query_pixels(label: np.ndarray, n: int = QUERIES) -> list[tuple[float, float]]:
    """Up to ``n`` query pixels as (y, x) fractions of the image: for each of the largest objects
    (connected regions of object pixels), its pixel nearest to the region's centroid."""
    from scipy import ndimage

    regions, count = ndimage.label(_objects(label))
    sizes = ndimage.sum_labels(np.ones_like(regions), regions, index=range(1, count + 1)) if count else []
    out = []
    for r in sorted(range(1, count + 1), key=lambda r: (-sizes[r - 1], r))[:n]:
        ys, xs = np.nonzero(regions == r)
        k = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        out.append(((ys[k] + 0.5) / label.shape[0], (xs[k] + 0.5) / label.shape[1]))
    return out


def cue_box(label: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1) of the unscored pixels (global_cue's cue), exclusive ends; None when none."""
    from ..data.synthetic import IGNORE_INDEX

    ys, xs = np.nonzero(label == IGNORE_INDEX)
    return None if len(ys) == 0 else (int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1)


def _pts(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def who(trial: Trial) -> str:
    """"seed 3 (learned, 97.1)": a drawn trial in words."""
    roles = [r for r in trial.roles if not r.startswith("seed ")]
    return f"seed {trial.seed}" + (f" ({', '.join(roles)}" if roles else " (") + \
        f"{', ' if roles else ''}mIoU {_pts(trial.value)})"
