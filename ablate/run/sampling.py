"""What a search's claims share: a trial's user attributes (:func:`trial_attrs`), the study's
Optuna sampler (:func:`make_sampler`) and the suggestion of one factor from its distribution."""
from __future__ import annotations

import json

from ..config.trial import TrialConfig


def trial_attrs(cell, seed: int, config) -> dict:
    """The user attributes that tie a trial record to its cell x seed and resolved config."""
    return {"cell_key": cell.key, "seed": seed, "cell": json.dumps(cell.label_dict), "config": TrialConfig.of(config).to_json()}


def make_sampler(study, n_existing: int = 0):
    """The study's sampler; re-created at every claim, so its seed advances with the trial count
    (a fixed seed would replay the same random start-up point for every trial)."""
    import optuna

    kind, seed = study.search["sampler"], study.seeds[0] + n_existing
    if kind == "grid":
        space = {k: list(v) if isinstance(v, list) else list(v["choices"]) for k, v in study.factors.items()}
        return optuna.samplers.GridSampler(space, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "nsga2":  # a generation of about a third of the budget: a small search still gets a few
        size = max(4, min(50, study.search["n_trials"] // 3))
        return optuna.samplers.NSGAIISampler(population_size=size, seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def suggest(trial, name, dist):
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return trial.suggest_categorical(name, dist.choices)
    if isinstance(dist, IntDistribution):
        return trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
