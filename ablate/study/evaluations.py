"""Evaluation-time factors: train each cell once, evaluate its final weights under every setting.

A study's ``eval_factors:`` mapping names factors that act only when a trained model is
evaluated: a mechanism factor that leaves the trained weights as they are and changes what the
block computes in evaluation (EMANet's ``T_eval``), and the keys of the ``eval:`` mapping
(``eval.mode: whole | slide | ms_flip``, ``eval.scales``, ``eval.flip``, ``eval.crop``,
``eval.stride``), or whole ``eval:`` mappings as the values of a factor ``eval``::

    factors: {T: [1, 3, 5]}                 # trained: 3 cells x seeds
    eval_factors: {T_eval: [1, 3, 5, 7]}    # each training evaluated 4 times
    eval_baseline: {T_eval: 3}              # the setting each other one is compared with (default: the first)

The training cells are the study's grid as without ``eval_factors`` (their keys unchanged); the
product of the evaluation factors is the list of :class:`EvalSetting`; every (training cell,
seed) with final weights is evaluated under every setting that applies to its mechanism, and
each evaluation is a row of its own keyed by :func:`eval_key` (the training cell's key and the
resolved setting). :func:`eval_config` is the configuration an evaluation runs: the training's
with the block's arguments and the ``eval:`` replaced. The runner is :mod:`ablate.run.evaluate`,
the records :mod:`ablate.storage.evaluations`, the report :mod:`ablate.report.evaluations`.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, replace

from ..attention import MECHANISMS
from ..config.errors import StudyError, brief
from ..config.evaluation import EVAL_KEYS, PAPER_SCALES, EvalSpec, parse_eval
from .records import fmt_value

KEY = "eval_factors"
BASELINE_KEY = "eval_baseline"
EVAL_SHORTHANDS = ("whole", "ms_flip")  # eval: whole image; ms_flip: the paper's six scales + flip
MAX_SETTINGS = 64


@dataclass(frozen=True)
class EvalSetting:
    """One assignment of the evaluation factors: the block's arguments it sets and the ``eval:`` it uses."""

    label: tuple  # ((factor, value), ...) in the study's order
    args: tuple  # ((mechanism factor, coerced value), ...)
    eval: EvalSpec

    def title(self) -> str:
        return ", ".join(f"{k}={_show(v)}" for k, v in self.label)

    def applies(self, mechanism: str) -> bool:
        """Whether a cell of ``mechanism`` has every block factor this setting sets."""
        return all(k in MECHANISMS[mechanism].defaults for k, _ in self.args)


def _show(v) -> str:
    if isinstance(v, dict):
        return EvalSpec.from_dict(v).describe() if set(v) <= set(EVAL_KEYS) else brief(v)
    return fmt_value(v)


def eval_key(cell_key: str, setting: EvalSetting) -> str:
    """The stable key of one evaluation row: the training cell's key and the resolved setting."""
    payload = json.dumps({"cell": cell_key, "args": dict(setting.args), "eval": setting.eval.as_dict()},
                         sort_keys=True, default=str)
    return hashlib.sha1(payload.encode()).hexdigest()[:12]


def eval_config(study, cell, seed: int, setting: EvalSetting):
    """The :class:`~ablate.config.trial.TrialConfig` one evaluation runs: (cell, seed)'s training
    configuration with ``setting``'s block arguments and ``eval:``."""
    config = study.trial(cell, seed)
    return replace(config, args={**config.args, **dict(setting.args)}, eval=setting.eval)


def evaluations(study) -> list[tuple]:
    """Every evaluation of the plan: (training cell, seed, setting, its row's key), cells outermost."""
    seeds = study.seeds
    return [(c, s, e, eval_key(c.key, e)) for c in study.cells() for e in study.evals if e.applies(c.mechanism)
            for s in seeds]


def reference(study) -> EvalSetting:
    """The setting each other setting of a training cell is compared with."""
    want = study.eval_baseline
    return next(e for e in study.evals if all(dict(e.label).get(k) == v for k, v in want.items())) if want \
        else study.evals[0]


def plan_lines(study) -> list[str]:
    """The dry run's lines: trainings, evaluations, and the saving against training every setting."""
    cells = study.cells()
    n_seeds = len(study.seeds)
    evaluated = [c for c in cells if any(e.applies(c.mechanism) for e in study.evals)]
    n_eval = len(study.evals)
    naive = (len(cells) - len(evaluated)) + len(evaluated) * n_eval
    lines = [f"  evaluation-time factors: {', '.join(study.eval_factors)} ({n_eval} setting(s); "
             f"each compared with {reference(study).title()} on the same checkpoints)"]
    lines += [f"    eval {i + 1}: {e.title()}" for i, e in enumerate(study.evals)]
    if len(evaluated) < len(cells):
        lines.append(f"    not evaluated (the mechanism lacks a factor): "
                     f"{', '.join(c.title() for c in cells if c not in evaluated)}")
    lines.append(f"  {len(evaluated)} trainings x {n_eval} evaluations x {n_seeds} seeds: {len(cells) * n_seeds} "
                 f"trainings and {len(evaluations(study))} evaluations instead of {naive * n_seeds} trainings "
                 f"(saves {naive * n_seeds - len(cells) * n_seeds} trainings)")
    return lines


# -- parsing ---------------------------------------------------------------------------------------

def _err(where: str, key: str, text: str) -> StudyError:
    return StudyError(where, key, text)


def parse_eval_factors(raw: dict, where: str, study) -> tuple[dict, tuple, dict]:
    """(eval_factors as written, the settings, eval_baseline) of a loaded grid ``study``; a bad
    key or value raises :class:`StudyError` naming the file and the key."""
    spec = raw.get(KEY)
    if spec is None:
        if raw.get(BASELINE_KEY) is not None:
            raise _err(where, BASELINE_KEY, "is only valid with eval_factors: (evaluation-time factors); remove it "
                       "or add eval_factors.")
        return {}, (), {}
    if not isinstance(spec, dict) or not spec:
        raise _err(where, KEY, f"expected a mapping of evaluation-time factor -> list of values, e.g. "
                   f"{{T_eval: [1, 3, 5]}} or {{eval.mode: [whole, ms_flip]}}; got {brief(spec)}.")
    _check_study(study, where)
    mech_factors = [k for k in spec if k != "eval" and not k.startswith("eval.")]
    for k, values in spec.items():
        if not isinstance(values, list) or not values:
            raise _err(where, f"{KEY}.{k}", f"expected a non-empty list of values, got {brief(values)}.")
        if k in study.factors:
            raise _err(where, f"{KEY}.{k}", f"is also a training factor (factors.{k}); a factor is either "
                       "trained or set at evaluation time, not both.")
        if k.startswith("eval.") and k[5:] not in EVAL_KEYS:
            raise _err(where, f"{KEY}.{k}", f"unknown evaluation key; valid: eval (whole mappings), "
                       f"{', '.join('eval.' + x for x in EVAL_KEYS)}, or a mechanism factor that acts at "
                       "evaluation time (EMANet's T_eval).")
    for k in mech_factors:
        _check_block_factor(study, where, k, spec[k])
    settings = []
    for combo in itertools.product(*spec.values()):
        label = tuple(zip(spec, combo))
        settings.append(_setting(study, where, label, mech_factors))
    if len(settings) > MAX_SETTINGS:
        raise _err(where, KEY, f"makes {len(settings)} settings; at most {MAX_SETTINGS}.")
    if len({(s.args, s.eval) for s in settings}) < len(settings):
        raise _err(where, KEY, "gives one setting twice (two values that resolve to the same evaluation); list "
                   "each once.")
    return dict(spec), tuple(settings), _baseline(raw.get(BASELINE_KEY), where, settings)


def _check_study(study, where: str) -> None:
    if study.search:
        raise _err(where, KEY, "is not available with search: (a search's points are trained, not evaluated); "
                   "write a grid study.")
    if study.sequential:
        raise _err(where, KEY, "is not available with sequential seeds ({start, max}); give a list or a count.")
    if study.metric != "val_miou":
        raise _err(where, KEY, f"evaluates the final weights, so the metric must be val_miou (the last epoch's), "
                   f"not {study.metric} (an earlier epoch's weights are not kept).")
    if study.train.checkpoint_every <= 0 or any(c.train.checkpoint_every <= 0 for c in study.cells()):
        raise _err(where, KEY, "needs each training's final weights, which are kept only with checkpoints on: "
                   "remove train.checkpoint_every: 0.")
    if study.trainer.isolated:
        raise _err(where, KEY, "evaluates in the worker's process; a trainer with several devices or a strategy "
                   "other than auto is not supported with evaluation-time factors yet.")


def _setting(study, where: str, label: tuple, mech_factors: list) -> EvalSetting:
    args = []
    for k, v in label:
        if k in mech_factors:
            preset = next(MECHANISMS[c.mechanism] for c in study.cells() if k in MECHANISMS[c.mechanism].defaults)
            args.append((k, preset.factor(k).coerce(v)))
    raw_eval = {k: v for k, v in study.eval.as_dict().items() if v is not None}
    if study.eval.mode != "slide":
        raw_eval = {k: v for k, v in raw_eval.items() if k not in ("crop", "stride")}
    for k, v in label:
        if k == "eval":
            raw_eval = _whole_eval(v, where)
    for k, v in label:
        if k.startswith("eval."):
            raw_eval[k[5:]] = v
    if raw_eval.get("mode") not in ("whole", "slide", "ms_flip"):
        raise _err(where, f"{KEY}.eval.mode", f"expected whole, slide or ms_flip (the paper's scales "
                   f"{', '.join(f'{s:g}' for s in PAPER_SCALES)} + flip), got {brief(raw_eval.get('mode'))}.")
    if raw_eval.get("mode") == "ms_flip":
        raw_eval.update(mode="whole", flip=True)
        if tuple(raw_eval.get("scales", (1.0,))) == (1.0,):
            raw_eval["scales"] = list(PAPER_SCALES)
    if raw_eval.get("mode") != "slide":
        for k in ("crop", "stride"):
            if any(name == f"eval.{k}" for name, _ in label):
                raise _err(where, f"{KEY}.eval.{k}", "applies to mode slide only; vary it together with "
                           "eval.mode: [slide] or write whole eval mappings as values of a factor eval.")
    try:
        spec = parse_eval(raw_eval, where, prefix=f"{KEY}.eval.")
    except StudyError as e:
        raise _err(where, e.key, f"{e.message.rstrip('.')} (in the evaluation setting "
                   f"{', '.join(f'{k}={_show(v)}' for k, v in label)}).") from None
    return EvalSetting(label, tuple(args), spec)


def _whole_eval(value, where: str) -> dict:
    if value in EVAL_SHORTHANDS:
        return {"mode": "whole"} if value == "whole" else {"mode": "whole", "scales": list(PAPER_SCALES), "flip": True}
    if isinstance(value, dict):
        return dict(value)
    raise _err(where, f"{KEY}.eval", f"each value is whole, ms_flip or an eval: mapping (mode, crop, stride, scales, "
               f"flip); got {brief(value)}.")


def _baseline(raw, where: str, settings: list) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise _err(where, BASELINE_KEY, f"expected a mapping of evaluation factor -> value, e.g. {{T_eval: 3}}; "
                   f"got {brief(raw)}.")
    hits = [s for s in settings if all(dict(s.label).get(k) == v for k, v in raw.items())]
    if len(hits) != 1:
        raise _err(where, BASELINE_KEY, f"{brief(raw)} matches {len(hits)} evaluation settings; name exactly one of: "
                   f"{'; '.join(s.title() for s in settings)}.")
    return dict(raw)


def _check_block_factor(study, where: str, k: str, values: list) -> None:
    """A block factor set at evaluation time: some cell's mechanism has it, each value is valid for
    it, the trained weights load into the block built with it (same names and shapes), and it
    changes what the block computes in evaluation (a factor that acts only in training does not).

    A factor its block declares evaluation-only (``Factor.evaluation``: EMANet's ``T_eval``) is
    taken on that word when its values are not all one: each value is only resolved against the
    cell's arguments (the block's ``check_args``), without building the block, so that loading the
    study imports no torch. Any other factor, or such a factor given one value repeated, is checked
    by building the block (:func:`_check_weights_and_effect`)."""
    owners = {c.mechanism: c for c in study.cells() if k in MECHANISMS[c.mechanism].defaults}
    if not owners:
        raise _err(where, f"{KEY}.{k}", f"is not a factor of {', '.join(sorted({c.mechanism for c in study.cells()}))}"
                   f"; valid: eval, eval.<{'|'.join(EVAL_KEYS)}>, or a factor of the block that acts at evaluation "
                   "time (python -m ablate list shows the factors).")
    for mechanism, cell in owners.items():
        preset = MECHANISMS[mechanism]
        coerced = []
        for v in values:
            try:
                coerced.append(preset.factor(k).coerce(v))
            except ValueError as e:
                raise _err(where, f"{KEY}.{k}", f"{brief(v)} is not a valid value for {mechanism}: {e}") from None
        if preset.factor(k).evaluation and (len(coerced) == 1 or len(set(coerced)) > 1):
            _check_resolves(preset, dict(cell.args), k, coerced, where)
        else:
            _check_weights_and_effect(preset, dict(cell.args), k, coerced, where)


def _unbuildable(preset, k: str, v, e: Exception, where: str) -> StudyError:
    return _err(where, f"{KEY}.{k}", f"{k}={_show(v)} cannot be built for {preset.name}: "
                f"{str(e).splitlines()[0][:200] if str(e) else type(e).__name__}")


def _check_resolves(preset, args: dict, k: str, values: list, where: str) -> None:
    """Each value with the cell's arguments passes the preset's checks (no block is built)."""
    for v in values:
        try:
            preset.resolve({**args, k: v})
        except Exception as e:  # noqa: BLE001 - the block refuses the combination
            raise _unbuildable(preset, k, v, e, where) from None


def _check_weights_and_effect(preset, args: dict, k: str, values: list, where: str) -> None:
    import torch  # builds the block: only for a factor not declared evaluation-only

    channels = 16
    outputs, trained = [], None
    x = torch.randn(2, channels, 6, 6, generator=torch.Generator().manual_seed(0))
    for v in values:
        merged = {**args, k: v}
        try:
            torch.manual_seed(0)
            block = preset.build(channels, **merged)
        except Exception as e:  # noqa: BLE001 - the block refuses the combination
            raise _unbuildable(preset, k, v, e, where) from None
        state = block.state_dict()
        if trained is None:
            trained = state
        else:
            shapes = {n: tuple(t.shape) for n, t in trained.items()}
            now = {n: tuple(t.shape) for n, t in state.items()}
            if shapes != now:
                diff = next((n for n in set(shapes) | set(now) if shapes.get(n) != now.get(n)), "?")
                raise _err(where, f"{KEY}.{k}", f"changes the trained weights of {preset.name} ({diff}: "
                           f"{shapes.get(diff)} -> {now.get(diff)} at {k}={_show(v)}), so it cannot be set after "
                           "training; make it a training factor (factors:) instead.")
            block.load_state_dict(trained)
        with torch.no_grad():
            outputs.append(block.eval()(x))
    if len(values) > 1 and all(torch.equal(outputs[0], o) for o in outputs[1:]):
        raise _err(where, f"{KEY}.{k}", f"does not change what {preset.name} computes in evaluation (it acts in "
                   "training only); the evaluation-time counterpart is a factor such as T_eval.")


__all__ = ["BASELINE_KEY", "EVAL_SHORTHANDS", "EvalSetting", "KEY", "eval_config", "eval_key", "evaluations",
           "parse_eval_factors", "plan_lines", "reference"]
