"""``ablate estimate STUDY.yaml [KEY=VALUE ...]``: a study's compute from measured training steps.

For each distinct cell the model is built as a trial builds it (:class:`ablate.models.segmenter.
Segmenter` from the trial config), then a few training iterations are timed on the machine at
hand (the GPU when torch sees one, else the CPU): forward, loss (with the auxiliary head's),
backward and an optimiser step of the study's optimiser, on a batch of random tensors of the
trial's shape (the per-device share of ``train.batch_size`` at the crop size), after warm-up.
What is not timed: data loading and augmentation, validation, DDP's gradient all-reduce, and
pretrained weights (they are never loaded: they do not change the time, and nothing is
downloaded), so the figure is a lower bound of a trial's wall time on that device.

Per cell it prints seconds per iteration (the median of the timed steps) and their
inter-quartile range, iterations per trial (``train.iterations``, or epochs
times batches per epoch from the dataset size: the synthetic task's ``train_images``, a real
dataset's images on disk, or its standard split size when the data is not here, said so),
the time per trial and times the seeds, each column in one unit (hours once a value in it
reaches 6 minutes, else seconds, said in its head); then the total in device-hours (a trial of ``devices x
num_nodes`` devices holds all of them). On a CPU every figure is labelled a CPU figure: a GPU is
typically tens of times faster. ``--budget S`` stops timing once S seconds have been spent and
gives the remaining cells the mean seconds per iteration of the timed ones (marked
"extrapolated").
"""
from __future__ import annotations

import argparse
import math
import sys
import textwrap
import time
from dataclasses import dataclass

import torch

from ..costs.measure import median_iqr
from ..config.errors import StudyError, brief, exit_with
from ..models.registry import lookup

# the standard training split sizes, for a real-data study whose data is not on this machine
STANDARD_TRAIN_IMAGES = {"voc": 1464, "voc+aug": 1464 + 10582, "cityscapes": 2975, "ade20k": 20210}
REAL_CLASSES = {"voc": 21, "cityscapes": 19, "ade20k": 150}  # mmseg 1.2.2's METAINFO class counts


@dataclass
class Row:
    """One cell's estimate: ``seconds_per_iteration`` measured (or extrapolated), the rest derived."""

    title: str
    seconds_per_iteration: float
    iterations: int
    seeds: int
    world: int = 1
    extrapolated: bool = False
    iqr_per_iteration: float = math.nan  # the spread of the timed iterations (nan: not measured)

    @property
    def seconds_per_trial(self) -> float:
        return self.seconds_per_iteration * self.iterations

    @property
    def seconds(self) -> float:
        """Wall seconds of the cell's trials run one after another."""
        return self.seconds_per_trial * self.seeds


@dataclass
class Shape:
    """What a cell's training step sees: classes, the per-device batch, the crop, the split size."""

    classes: int
    batch: int
    crop: tuple
    train_images: int
    images_note: str = ""


def _real_shape(data, batch: int) -> Shape:
    from ..data.real import resolve_layout

    try:
        layout = resolve_layout(data, "estimate")
        n, note = sum(p.count for p in layout.train), ""
    except StudyError:
        key = "voc+aug" if data.name == "voc" and data.aug != "off" else data.name
        n = STANDARD_TRAIN_IMAGES[key]
        note = f"{data.name} data not found under {data.data_root}: the standard split size ({n:,} images) is assumed"
    if data.train_images:
        n = min(n, data.train_images)
    return Shape(REAL_CLASSES[data.name], batch, tuple(data.crop_size), n, note)


def cell_shape(config: dict, world: int) -> Shape:
    """The shape of a trial config's training batches on one of its ``world`` devices."""
    from ..data.real import is_real, spec_from_dict
    from ..data.synthetic import SceneConfig, num_classes
    from ..plugins.mechanisms import is_spec, task_data

    batch = max(1, int(config["train"]["batch_size"]) // world)
    data = config["data"]
    if is_real(data):
        return _real_shape(spec_from_dict(data), batch)
    if is_spec(data.get("name")):
        (xt, _), _, classes = task_data(data)
        return Shape(classes, batch, tuple(xt.shape[-2:]), len(xt))
    spec = SceneConfig(**data)
    return Shape(num_classes(spec.task), batch, (spec.size, spec.size), spec.train_images)


def iterations_per_trial(train: dict, shape: Shape, real: bool) -> int:
    """``train.iterations``, else epochs x batches per epoch as the trainer draws them (the
    synthetic loader keeps a last short batch, the real one drops it when a full one exists)."""
    if int(train.get("iterations") or 0):
        return int(train["iterations"])
    n, b = shape.train_images, int(train["batch_size"])
    per_epoch = (n // b if n >= b else 1) if real else math.ceil(n / b)
    return int(train["epochs"]) * max(1, per_epoch)


def _timing_config(config: dict) -> dict:
    backbone = dict(config["backbone"])
    entry = lookup(backbone.get("name"))
    if entry is not None and entry.weights:
        backbone["pretrained"] = "none"  # weights do not change the time; nothing is fetched
    if backbone.get("init") == "pretrained_synthetic":
        backbone["init"] = "scratch"  # nor do the pretext's weights (ablate/models/pretext.py); nothing is trained
    return {**config, "backbone": backbone}


def time_step(config: dict, shape: Shape, device: torch.device, iterations: int = 2, warmup: int = 1,
              spread: bool = False):
    """Median seconds of one training step (forward, loss, backward, optimiser step) of the trial's
    model on a random batch of ``shape``, each of ``iterations`` steps timed alone after ``warmup``
    untimed ones; with ``spread``, (median, inter-quartile range) in seconds."""
    from ..models.segmenter import Segmenter

    cfg = _timing_config(config)
    train, head = cfg["train"], cfg.get("head") or {}
    model = Segmenter(shape.classes, cfg["backbone"], cfg["mechanism"], cfg["args"], head, seed=int(cfg["seed"]))
    model.to(device).train()
    if train.get("optimizer", "adamw") == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=train["lr"], momentum=train.get("momentum", 0.9),
                              weight_decay=train["weight_decay"])
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=train["lr"], weight_decay=train["weight_decay"])
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape.batch, 3, *shape.crop, generator=gen).to(device)
    y = torch.randint(0, shape.classes, (shape.batch, *shape.crop), generator=gen).to(device)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(x, y, 255).backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - t0)
    median, iqr = median_iqr(times)
    return (median, iqr) if spread else median


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cells(study) -> list:
    """A grid's cells; for a search study, the one cell at each factor's first choice or low bound."""
    if not study.search:
        return study.cells()
    point = {}
    for k, spec in study.factors.items():
        point[k] = spec[0] if isinstance(spec, list) else (spec["choices"][0] if "choices" in spec else spec["low"])
    return [study.search_cell(point)]


def _seed_count(study) -> tuple[int, str]:
    if study.point_search():
        from ..study.search import planned_trials

        n_search, n_confirm = planned_trials(study.search)
        return n_search + n_confirm, (f"{study.search['n_trials']} points x {study.search['seeds_per_point']} seeds "
                                      f"+ {n_confirm} confirmation trials, timed at one cell")
    if study.search:
        return study.search["n_trials"] * len(study.seeds), f"{study.search['n_trials']} search trials x " \
                                                             f"{len(study.seeds)} seeds"
    if study.sequential:
        s = study.sequential
        return s["max"], f"sequential seeds: {s['start']} to {s['max']} per cell; the figure is the most"
    return len(study.seeds), ""


def estimate(study, device: torch.device, iterations: int = 2, warmup: int = 1, budget: float = 0.0,
             progress=None) -> tuple[list[Row], list[str]]:
    """Rows (one per cell) and the notes that qualify them (assumed split sizes, seeds)."""
    world = study.trainer.world_size
    seeds, seed_note = _seed_count(study)
    rows, notes, spent = [], [seed_note] if seed_note else [], 0.0
    for cell in _cells(study):
        config = study.trial_config(cell, study.seeds[0])
        shape = cell_shape(config, world)
        uses_size = not int(config["train"].get("iterations") or 0)  # epochs: the split size matters
        if uses_size and shape.images_note and shape.images_note not in notes:
            notes.append(shape.images_note)
        its = iterations_per_trial(config["train"], shape, _is_real(config))
        if budget and spent > budget and rows:
            measured = [r.seconds_per_iteration for r in rows if not r.extrapolated]
            rows.append(Row(cell.title(), sum(measured) / len(measured), its, seeds, world, extrapolated=True))
            continue
        t0 = time.perf_counter()
        timed = time_step(config, shape, device, iterations, warmup, spread=True)
        sec, iqr = timed if isinstance(timed, tuple) else (timed, math.nan)
        spent += time.perf_counter() - t0
        rows.append(Row(cell.title(), sec, its, seeds, world, iqr_per_iteration=iqr))
        if progress:
            progress(rows[-1])
    return rows, notes


def _is_real(config: dict) -> bool:
    from ..data.real import is_real

    return is_real(config["data"])


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 360 else f"{seconds:,.1f} s"


def _column_unit(values: list[float]) -> tuple[str, float]:
    """One unit for a whole column: hours when its largest value is 6 minutes or more, else seconds."""
    return ("h", 3600.0) if max(values, default=0.0) >= 360 else ("s", 1.0)


def render(study, rows: list[Row], notes: list[str], device: torch.device, iterations: int, warmup: int) -> str:
    """The printed estimate: a header saying what was timed and where, the table, the total."""
    cpu = device.type == "cpu"
    where = f"CPU ({torch.get_num_threads()} threads)" if cpu else torch.cuda.get_device_name(device)
    label = " [CPU figure]" if cpu else ""
    cfg = study.trial_config(_cells(study)[0], study.seeds[0])
    shape = cell_shape(cfg, study.trainer.world_size)
    lines = [f"ablate estimate: {study.name}, measured on {where}{label}",
             textwrap.fill(f"Timed: forward, loss, backward and optimiser step of a batch of {shape.batch} at "
                           f"{shape.crop[0]}x{shape.crop[1]} (train.batch_size {cfg['train']['batch_size']} over "
                           f"{study.trainer.world_size} device(s)), random tensors, pretrained weights not loaded; "
                           f"median and IQR of {iterations} iteration(s), each timed alone, after {warmup} warm-up. Not timed: data loading, "
                           "validation, DDP communication.", 100)]
    lines += [f"Note: {n}." for n in notes]
    width = max([len("cell")] + [len(r.title) for r in rows])
    (tu, tdiv), (au, adiv) = _column_unit([r.seconds_per_trial for r in rows]), _column_unit([r.seconds for r in rows])
    lines.append(f"{'cell':<{width}}  {'s/iter':>9}  {'IQR s/iter':>10}  {'iter/trial':>10}  "
                 f"{'trial ' + tu:>10}  {'seeds':>5}  {'all seeds ' + au:>12}")
    for r in rows:
        iqr = "" if math.isnan(r.iqr_per_iteration) else f"{r.iqr_per_iteration:.4f}"
        lines.append(f"{r.title:<{width}}  {r.seconds_per_iteration:>9.4f}  {iqr:>10}  {r.iterations:>10,}  "
                     f"{r.seconds_per_trial / tdiv:>10,.1f}  {r.seeds:>5}  {r.seconds / adiv:>12,.1f}"
                     + ("  (extrapolated)" if r.extrapolated else ""))
    total = sum(r.seconds for r in rows)
    world = study.trainer.world_size
    lines.append(f"Total{label}: {sum(r.seeds for r in rows)} trials, {_hours(total)} of trials run one after "
                 f"another" + (f", {total * world / 3600:,.1f} device-hours ({world} devices per trial)"
                               if world > 1 else "") + ".")
    return "\n".join(lines)


# -- bounds the runner checks before anything is written (``ablate run``, its --dry-run too) --------------

STEP_FLOOR_S = 1e-3  # no training step is taken to be faster than this (a tiny model on a fast GPU)
MAX_PLAN_S = 365 * 86400.0  # a plan that needs more compute than this even at that floor is refused
YEAR_S = 365.25 * 86400


def check_plan(study) -> None:
    """Refuse, before anything is written, a plan that cannot finish or cannot fit here: one
    whose training steps, each at :data:`STEP_FLOOR_S`, come to more than :data:`MAX_PLAN_S`
    (:func:`plan_steps`), or a cell whose model needs more memory than this machine's device
    has (:func:`training_bytes`). StudyError naming the key to change and the estimate."""
    steps, trials, key = plan_steps(study)
    seconds = steps * STEP_FLOOR_S
    if seconds > MAX_PLAN_S:
        raise StudyError(str(study.path), key, f"the plan is {trials:,} trial(s) of {steps:,} training steps in all; "
                         f"even at {STEP_FLOOR_S * 1e3:g} ms a step (faster than any trial runs) that is "
                         f"{long_duration(seconds)} of compute, beyond the {long_duration(MAX_PLAN_S)} a plan may "
                         f"take. Lower {key} (ablate estimate times the real steps).")
    _check_memory(study)


def plan_steps(study) -> tuple[int, int, str]:
    """(training steps of the plan, its trials, the key that sets their length), counted low:
    ``train.iterations``, else epochs x full batches of ``data.train_images`` (one batch when the
    split's size is not in the study); a sequential study's start seeds; nothing read from disk."""
    cells = _cells(study)
    pairs = [(cells[0], s) for s in study.seeds[:1]] * study.search["n_trials"] if study.search else study.trials()
    if study.point_search():
        from ..study.search import planned_trials

        pairs = [(cells[0], study.seeds[0])] * sum(planned_trials(study.search))
    steps, key = 0, "train.epochs"
    for cell, _ in pairs:
        train = cell.train
        if getattr(train, "iterations", 0):
            steps, key = steps + int(train.iterations), "train.iterations"
            continue
        n = getattr(cell.data, "train_images", 0) or 1
        steps += int(train.epochs) * max(1, n // max(1, int(train.batch_size)))
    return steps, len(pairs), key


def long_duration(seconds: float) -> str:
    """'127 years', '3.5 days', '5.0 h' (three significant figures at most)."""
    if seconds >= 2 * YEAR_S:
        return f"{seconds / YEAR_S:,.3g} years" if seconds < 1000 * YEAR_S else f"{seconds / YEAR_S:,.0f} years"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.3g} days"
    return _hours(seconds)


def memory_limit(study) -> tuple[int, str]:
    """The memory one trial's device has: the first CUDA device's when the study trains on one,
    else this machine's RAM; and its name in words."""
    if study.trainer.accelerator != "cpu" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory), "the GPU"
    import os

    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")), "this machine's RAM"


def training_bytes(config: dict, world: int) -> dict | None:
    """The least memory a trial of ``config`` needs to train, by part, from its model built on
    PyTorch's meta device (shapes only, nothing allocated, no weights read) and one forward of
    one image there: 4 bytes x the parameters x 4 (weights, gradients, AdamW's two moments; 3
    with SGD) for the backbone, the block and the rest, and each layer's output for the
    per-device batch (kept for the backward). None when the model cannot be built there."""
    from ..models.segmenter import Segmenter

    cfg = _timing_config(config)
    train, data = cfg["train"], cfg["data"]
    side = tuple(data.get("crop_size") or (data.get("size", 64),) * 2)
    batch = max(1, min(int(train["batch_size"]), int(data.get("train_images") or train["batch_size"])) // world)
    try:
        with torch.device("meta"):
            model = Segmenter(2, cfg["backbone"], cfg["mechanism"], cfg["args"], cfg.get("head") or {},
                              seed=int(cfg["seed"]))
    except Exception:  # noqa: BLE001 - a model the meta device cannot build: the doctor and the trial judge it
        return None
    copies = 3 if train.get("optimizer", "adamw") == "sgd" else 4
    count = lambda m: sum(p.numel() for p in m.parameters()) if m is not None else 0  # noqa: E731
    backbone, block = count(model.backbone), count(getattr(model, "attention", None))
    parts = {"backbone": 4 * copies * backbone, "block": 4 * copies * block,
             "head": 4 * copies * (count(model) - backbone - block), "activations": 0}
    outputs = [0]
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.__setitem__(0, outputs[0] + o.numel())
                                     if isinstance(o, torch.Tensor) else None)
             for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, *side, device="meta"))
        parts["activations"] = 4 * outputs[0] * batch
    except Exception:  # noqa: BLE001 - an op without a meta kernel: the parameters alone
        pass
    finally:
        for h in hooks:
            h.remove()
    return {**parts, "batch": batch, "params": count(model)}


def _check_memory(study) -> None:
    limit, where = memory_limit(study)
    seen = set()
    for cell in _cells(study):
        config = study.trial_config(cell, study.seeds[0])
        what = repr([config[k] for k in ("backbone", "mechanism", "args", "head", "data", "train")])
        if what in seen:
            continue
        seen.add(what)
        need = training_bytes(config, study.trainer.world_size)
        if need is None:
            continue
        parts = {k: need[k] for k in ("backbone", "block", "head", "activations")}
        total = sum(parts.values())
        if total <= limit:
            continue
        key, value = _largest_part_key(config, max(parts, key=parts.get), need["batch"])
        raise StudyError(str(study.path), key, f"a trial of cell {cell.title()} needs at least {_gib(total)} of "
                         f"memory to train ({need['params']:,} parameters: {_gib(total - parts['activations'])} "
                         f"with their gradients and optimiser state; {_gib(parts['activations'])} of activations "
                         f"for a batch of {need['batch']}), more than the {_gib(limit)} of {where}; {key} = "
                         f"{brief(value)} makes the largest part: lower it.")


def _largest_part_key(config: dict, part: str, batch: int) -> tuple[str, object]:
    """The study key behind the largest part of a trial's memory, and its value."""
    if part == "backbone":
        backbone = config["backbone"]
        for k in ("width", "depth"):
            if isinstance(backbone.get(k), int):
                return f"model.backbone.{k}", backbone[k]
        return "model.backbone.name", backbone.get("name")
    if part == "block":
        return "model.args" if config["args"] else "model.mechanism", config["args"] or config["mechanism"]
    if part == "head":
        return "model.head", config.get("head")
    if batch > 1:
        return "train.batch_size", config["train"]["batch_size"]
    data = config["data"]
    return ("data.crop_size", data["crop_size"]) if "crop_size" in data else ("data.size", data.get("size"))


def _gib(n: float) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ablate estimate", description=__doc__.split("\n\n")[0])
    p.add_argument("study")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="as for ablate run")
    p.add_argument("--iterations", type=int, default=2, help="timed iterations per cell (default 2)")
    p.add_argument("--warmup", type=int, default=1, help="untimed iterations first (default 1)")
    p.add_argument("--budget", type=float, default=0.0, help="stop timing after this many seconds and "
                   "extrapolate the remaining cells (default 0: time every cell)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on a CPU (default: torch's)")
    p.add_argument("--cpu", action="store_true", help="time on the CPU even when a GPU is present")
    return p


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    a = p.parse_args(argv)
    for flag, value, low in (("--iterations", a.iterations, 1), ("--warmup", a.warmup, 0),
                             ("--budget", a.budget, 0), ("--threads", a.threads, 0)):
        if value < low:
            p.error(f"{flag} must be at least {low}, got {value}")
    from ..study.overrides import load_with_overrides
    from ..trainer.trial import quiet_libraries

    try:
        study = load_with_overrides(a.study, a.overrides, check_files=False)
    except StudyError as e:
        exit_with(e)
    quiet_libraries()
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device("cuda" if torch.cuda.is_available() and not a.cpu else "cpu")
    rows, notes = estimate(study, device, a.iterations, a.warmup, a.budget,
                           progress=lambda r: print(f"  timed {r.title}: {r.seconds_per_iteration:.4f} s/iter",
                                                    file=sys.stderr, flush=True))
    print(render(study, rows, notes, device, a.iterations, a.warmup))
    return 0


if __name__ == "__main__":
    sys.exit(main())
