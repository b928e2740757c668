"""Task plugins: ``data: {name: module:attr, size, train_images, val_images, seed, <options>}``
validated into a :class:`TaskSpec`, the contract of one drawn (image, label) pair, and the train
and val splits drawn from their own streams of the spec's seed (cached per process).

The contract is :mod:`ablate.plugins`' docstring's; everything here is re-exported there.
"""
from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from ..config.vocab import Factor
from ..config.errors import StudyError, brief
from .load import PluginError, is_spec, load_object, option_values, options_of, said


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """``data:`` of a task plugin: the generator's spec, the split sizes, the seed and its options."""

    name: str
    size: int = 32
    train_images: int = 1536
    val_images: int = 384
    seed: int = 0
    options: tuple = ()  # ((option, value), ...) in the generator's order

    _rules = {"size": 8, "train_images": 1, "val_images": 1, "seed": 0}  # key -> minimum

    @property
    def task(self) -> str:
        """The generator's spec (what ``SceneConfig.task`` says of a synthetic task)."""
        return self.name

    def as_dict(self) -> dict:
        return {"name": self.name, "size": self.size, "train_images": self.train_images,
                "val_images": self.val_images, "seed": self.seed, **dict(self.options)}


def load_task(name: str, base: str | Path | None = None) -> tuple[Callable, int, dict[str, Factor]]:
    """(generator, class count, options) of the task plugin ``name`` (``module:attr``)."""
    plugin = f"task plugin {brief(name)}"
    make = load_object(name, "task", base)
    options = options_of(make, plugin, ("rng", "size"))
    classes = getattr(make, "num_classes", None)
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 2:
        raise PluginError(plugin, f"it needs an int attribute num_classes >= 2 (the labels' classes), has "
                          f"{brief(classes) if classes is not None else 'none'}; set e.g. {name.split(':')[1]}."
                          "num_classes = 3.")
    bad = sorted(set(options) & set(TaskSpec._rules))
    if bad:
        raise PluginError(plugin, f"its option {bad[0]!r} is a key ablate sets itself (size, train_images, "
                          "val_images, seed); rename it.")
    return make, classes, options


def task_spec(raw: Mapping, where: str, prefix: str = "data.", base: TaskSpec | None = None) -> TaskSpec:
    """Validate ``data:`` of a task plugin (or one ``data.X`` factor over ``base``) and draw one
    image to check the contract; StudyError naming the key."""
    name = raw.get("name", base.name if base else None)
    if not is_spec(name):
        raise StudyError(where, prefix + "name", f"expected a task plugin as module:attr, got {brief(name)}.")
    try:
        make, classes, options = load_task(name, Path(where).parent)
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    spec = base or TaskSpec(name, options=tuple((k, f.default) for k, f in options.items()))
    fields = {}
    for k, minimum in TaskSpec._rules.items():
        v = raw.get(k, getattr(spec, k))
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise StudyError(where, prefix + k, f"expected an integer >= {minimum}, got {brief(v)}.")
        fields[k] = v
    values = option_values(raw, options, dict(spec.options), where, prefix, ("name", *TaskSpec._rules))
    spec = TaskSpec(name, **fields, options=tuple(values.items()))
    try:
        check_image(make(*_rng(spec, 0), **values), spec.size, classes, f"task plugin {brief(name)}")
    except PluginError as e:
        raise e.at(where, prefix + "name") from None
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the generator's own code
        raise StudyError(where, prefix + "name", f"task plugin {brief(name)}: drawing an image raised "
                         f"{said(e)}.") from None
    return spec


def _rng(spec: TaskSpec, split: int):
    return np.random.default_rng([spec.seed, split]), spec.size


def check_image(pair: Any, size: int, classes: int, plugin: str = "the task") -> None:
    """The task contract for one drawn pair: a (3, S, S) float image and an (S, S) int label
    with values below ``classes`` or 255."""
    if not isinstance(pair, tuple) or len(pair) != 2:
        raise PluginError(plugin, "it must return a pair (image, label).")
    image, label = np.asarray(pair[0]), np.asarray(pair[1])
    if image.shape != (3, size, size) or image.dtype.kind != "f":
        raise PluginError(plugin, f"its image is {image.dtype} of shape {image.shape}; expected float of shape "
                          f"(3, {size}, {size}).")
    if label.shape != (size, size) or label.dtype.kind not in "iu":
        raise PluginError(plugin, f"its label is {label.dtype} of shape {label.shape}; expected integers of shape "
                          f"({size}, {size}).")
    wrong = np.unique(label[(label != 255)])
    wrong = wrong[(wrong < 0) | (wrong >= classes)]
    if wrong.size:
        raise PluginError(plugin, f"its label holds {int(wrong[0])}, outside 0 .. {classes - 1} (num_classes) "
                          "and not 255 (ignored).")


def task_spec_from_dict(data: Mapping) -> TaskSpec:
    """The :class:`TaskSpec` of a trial config's ``data`` (``TaskSpec.as_dict``'s inverse)."""
    fixed = {k: data[k] for k in TaskSpec._rules}
    return TaskSpec(data["name"], **fixed, options=tuple((k, v) for k, v in data.items()
                                                         if k != "name" and k not in fixed))


@functools.lru_cache(maxsize=4)
def _splits(spec: TaskSpec):
    import torch  # here, not at the top: naming a task plugin (a study that loads) imports no torch

    make, _, _ = load_task(spec.name)
    out = []
    for split, count in ((0, spec.train_images), (1, spec.val_images)):
        rng, size = _rng(spec, split)
        pairs = [make(rng, size, **dict(spec.options)) for _ in range(count)]
        images = torch.from_numpy(np.stack([np.asarray(p[0], dtype=np.float32) for p in pairs]))
        labels = torch.from_numpy(np.stack([np.asarray(p[1]) for p in pairs]).astype(np.int64))
        out.append((images, labels))
    return tuple(out)


def task_data(data: Mapping) -> tuple[tuple, tuple, int]:
    """(train (images, labels), val (images, labels), class count) of a trial config's task
    plugin ``data``: images (N, 3, S, S) float32, labels (N, S, S) int64; each split from its own
    stream of the spec's seed (train [seed, 0], val [seed, 1]), so the val split does not depend
    on the trial seed. Cached per process and spec."""
    spec = task_spec_from_dict(data)
    train, val = _splits(spec)
    return train, val, load_task(spec.name)[1]
