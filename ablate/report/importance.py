"""Which factor matters in a point search, from Optuna's own functions, with the spread over seeds.

:func:`importances` rebuilds the search's points (their FrozenTrials, as collected) in an in-memory
Optuna study and asks :func:`optuna.importance.get_param_importances` with the fANOVA and the
PED-ANOVA evaluators for the importance of each factor to the metric: once for the mean Optuna was
told, and once per search seed with that seed's value as the target (every point ran every search
seed, so each seed is one complete replicate of the search's response surface); the spread of the
per-seed importances is how far a single-seed search could have misread them. PED-ANOVA ranks
lower targets as better, so it is given minus the metric. A factor of a conditional space (one the
sampled mechanism does not have) is judged over the points that have it (Optuna's own filtering).

The figures (:func:`figures`): the optimisation history (Optuna's
``plot_optimization_history``), the importances with their spread over seeds (matplotlib error
bars), partial dependence per factor (scikit-learn's ``PartialDependenceDisplay`` on a random forest
fitted to the points' means, factors encoded as the sampler sees them: log-range factors on a log
axis, choices by index) and, with several objectives, the Pareto front (Optuna's
``plot_pareto_front``). Optuna's plotting functions draw through pyplot: each figure is closed in
pyplot once drawn, and the rc settings they change are restored.
"""
from __future__ import annotations

import contextlib
import math
import warnings

EVALUATORS = ("fANOVA", "PED-ANOVA")
MIN_POINTS = 4  # fewer finished points: no importances


def _memory_study(info: dict, directions: list[str]):
    """The finished distinct points in an in-memory Optuna study (nothing is written anywhere)."""
    import optuna

    points = [t for t in info["trials"] if t.state == optuna.trial.TrialState.COMPLETE and t.params
              and "same_as" not in t.user_attrs]
    mem = optuna.create_study(directions=directions or ["maximize"], storage=optuna.storages.InMemoryStorage())
    mem.add_trials(points)
    return mem


def _evaluator(name: str):
    import optuna

    if name == "fANOVA":
        return optuna.importance.FanovaImportanceEvaluator(seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.importance.PedAnovaImportanceEvaluator()


@contextlib.contextmanager
def _quiet():
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        level = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


def importances(study, info: dict) -> dict | None:
    """{evaluator: {"told": {factor: importance}, "seeds": {seed: {factor: importance}}}} or None
    with fewer than :data:`MIN_POINTS` finished points. Importances are normalised to sum to 1.
    Computed once per report (kept in ``info``: the table and the figure share them)."""
    if "importances" not in info:
        info["importances"] = _importances(study, info)
    return info["importances"]


def _importances(study, info: dict) -> dict | None:
    import optuna

    mem = _memory_study(info, ["maximize"] * len(study.search["objectives"]))
    if len(mem.trials) < MIN_POINTS:
        return None
    values = info["all_values"]
    out = {}
    for name in EVALUATORS:
        sign = -1.0 if name == "PED-ANOVA" else 1.0  # PED-ANOVA takes lower as better

        def target(t, s=None):
            v = t.values[0] if s is None else values.get(t.user_attrs["cell_key"], {}).get(s, math.nan)
            return sign * v

        with _quiet():
            told = optuna.importance.get_param_importances(mem, evaluator=_evaluator(name), target=target)
            seeds = {s: optuna.importance.get_param_importances(mem, evaluator=_evaluator(name),
                                                                target=lambda t, s=s: target(t, s))
                     for s in study.search_seeds()}
        out[name] = {"told": dict(told), "seeds": seeds}
    return out


def importance_lines(study, info: dict) -> list[str]:
    """The importances table: each factor's importance to the mean told, and its range over seeds."""
    imp = importances(study, info) if info else None
    if imp is None:
        return ["", "Factor importances: n/a (fewer than 4 finished points)."]
    factors = list(imp["fANOVA"]["told"])
    lines = ["", "### Which factor matters", "",
             "Importance of each factor to the metric (normalised to sum to 1) by Optuna's fANOVA and PED-ANOVA "
             "evaluators: for the mean over the search seeds that Optuna was told, and the range over the "
             f"{len(study.search_seeds())} seed(s) with each seed's own value as the target.", "",
             "| factor | " + " | ".join(f"{n} (mean) | {n} over seeds [min, max]" for n in EVALUATORS) + " |",
             "|---|" + "---|---|" * len(EVALUATORS)]
    for f in factors:
        cols = []
        for n in EVALUATORS:
            per = [v.get(f, math.nan) for v in imp[n]["seeds"].values()]
            cols += [f"{imp[n]['told'].get(f, math.nan):.2f}", f"[{min(per):.2f}, {max(per):.2f}]" if per else "n/a"]
        lines.append(f"| {f} | " + " | ".join(cols) + " |")
    return lines


# -- figures ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _pyplot():
    """Optuna's matplotlib functions draw with pyplot and set a style: restore the rc settings after."""
    import matplotlib

    with matplotlib.rc_context(), _quiet():
        yield


def _close(ax):
    from matplotlib import pyplot as plt

    fig = ax.figure if not hasattr(ax, "shape") else ax.flat[0].figure
    plt.close(fig)
    return fig


def history(study, info: dict):
    """Optuna's optimisation history of the metric's mean over the search seeds."""
    import optuna

    mem = _memory_study(info, ["maximize"] * len(study.search["objectives"]))
    if not mem.trials:
        return None
    with _pyplot():
        ax = optuna.visualization.matplotlib.plot_optimization_history(
            mem, target=lambda t: 100 * t.values[0], target_name="mean over search seeds")
        ax.set_ylabel(f"{study.metric} (points)")
        ax.figure.set_size_inches(8, 3.4)
        return _close(ax)


def importance_figure(study, info: dict):
    """Each factor's fANOVA and PED-ANOVA importance to the mean, with its range over seeds."""
    imp = importances(study, info)
    if imp is None:
        return None
    from matplotlib.figure import Figure

    factors = list(imp["fANOVA"]["told"])
    fig = Figure(figsize=(6.5, 0.8 + 0.45 * len(factors) * len(EVALUATORS)), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    for j, (name, colour) in enumerate(zip(EVALUATORS, ("#0969da", "#bc4c00"))):
        ys = [i * (len(EVALUATORS) + 1) + j for i in range(len(factors))]
        told = [imp[name]["told"].get(f, 0.0) for f in factors]
        per = [[v.get(f, 0.0) for v in imp[name]["seeds"].values()] for f in factors]
        err = [[t - min(p) for t, p in zip(told, per)], [max(p) - t for t, p in zip(told, per)]]
        ax.barh(ys, told, color=colour, alpha=0.7, label=f"{name}: mean told")
        ax.errorbar(told, ys, xerr=[[max(0.0, e) for e in err[0]], [max(0.0, e) for e in err[1]]], fmt="none",
                    ecolor="#24292f", capsize=3, lw=0.9)
    ax.set_yticks([i * (len(EVALUATORS) + 1) + 0.5 for i in range(len(factors))], factors, fontsize=8)
    ax.set_xlabel("importance (sums to 1); whiskers: range over the search seeds, one seed's value each", fontsize=8)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _encode(mem):
    """The points' factors as numbers: log10 of a log range, the index of a choice."""
    from optuna.distributions import CategoricalDistribution

    names = sorted({k for t in mem.trials for k in t.params if all(k in u.params for u in mem.trials)})
    rows = []
    for t in mem.trials:
        row = []
        for k in names:
            d, v = t.distributions[k], t.params[k]
            if isinstance(d, CategoricalDistribution):
                row.append(float(d.choices.index(v)))
            else:
                row.append(math.log10(v) if getattr(d, "log", False) else float(v))
        rows.append(row)
    return names, rows


def partial_dependence(study, info: dict):
    """Partial dependence of the metric's mean on each factor (scikit-learn's display of a random
    forest fitted to the finished points)."""
    mem = _memory_study(info, ["maximize"] * len(study.search["objectives"]))
    if len(mem.trials) < MIN_POINTS:
        return None
    import numpy as np
    from matplotlib.figure import Figure
    from sklearn.ensemble import RandomForestRegressor
    from sklearn.inspection import PartialDependenceDisplay

    names, rows = _encode(mem)
    if not names:
        return None
    x, y = np.asarray(rows), np.asarray([100 * t.values[0] for t in mem.trials])
    forest = RandomForestRegressor(n_estimators=64, min_samples_leaf=2, random_state=0).fit(x, y)
    labels = [f"log10 {k}" if getattr(mem.trials[0].distributions[k], "log", False) else k for k in names]
    fig = Figure(figsize=(2.6 * len(names) + 0.6, 2.9), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    with _quiet():
        PartialDependenceDisplay.from_estimator(forest, x, list(range(len(names))), feature_names=labels,
                                                ax=axes, kind="average", grid_resolution=30)
    for ax, col in zip(axes, range(len(names))):
        ax.scatter(x[:, col], y, s=8, color="#6e7781", alpha=0.6, zorder=3)
    axes[0].set_ylabel(f"{study.metric} (points)")
    return fig


def pareto(study, info: dict):
    """Optuna's Pareto front of a search of several objectives (None with one)."""
    import optuna

    names = study.search["objectives"]
    if len(names) < 2:
        return None
    mem = _memory_study(info, ["maximize"] + ["minimize"] * (len(names) - 1))  # the metric up, costs down
    if not mem.trials:
        return None
    with _pyplot():
        ax = optuna.visualization.matplotlib.plot_pareto_front(mem, target_names=[f"{n} (mean over seeds)"
                                                                                  for n in names])
        fig = _close(ax)
        fig.set_size_inches(6.5, 4.2)
        return fig


def figures(study, tab: dict) -> list[tuple[str, str, object]]:
    """(stem, caption, Figure) of a point search's figures, for :func:`ablate.report.figures.figures`."""
    info = tab.get("search")
    if not info or not info["trials"]:
        return []
    out = [("history", "Optimisation history: the metric's mean over the search seeds of each point (optimistic)",
            history(study, info)),
           ("importance", "Factor importances (fANOVA, PED-ANOVA): mean told, whiskers the range over seeds",
            importance_figure(study, info)),
           ("dependence", "Partial dependence of the metric's mean on each factor (random forest over the points)",
            partial_dependence(study, info)),
           ("pareto", "Pareto front of the search's objectives (means over the search seeds)", pareto(study, info))]
    return [(stem, cap, fig) for stem, cap, fig in out if fig is not None]
