"""The learning-curves figure grows with cells and epochs, not trials: a cell of more than
SEED_LINES_MAX seeds is drawn as the band of its seeds' curves (lowest to highest at each epoch)."""
from __future__ import annotations

import random

from matplotlib.collections import LineCollection, PolyCollection

from ablate.report import figures


def _inputs(seeds: dict[str, int], epochs: int = 6, seed: int = 0):
    rng = random.Random(seed)
    rows = [{"key": k, "title": f"cell {k}", "verdict": "inconclusive", "limited": False, "role": "reference", "n": 0}
            for k in seeds]
    curves = {k: [[min(1.0, 0.1 * e + 0.05 * rng.random()) for e in range(epochs - (i % 2))] for i in range(n)]
              for k, n in seeds.items()}
    return {"rows": rows}, {"curves": curves}


def _collections(fig):
    (ax,) = fig.axes
    return ([c for c in ax.collections if type(c) is LineCollection],
            [c for c in ax.collections if type(c) is PolyCollection])


def test_few_seeds_are_lines_and_many_are_one_band_spanning_them():
    cap = figures.SEED_LINES_MAX
    tab, data = _inputs({"few": 3, "many": cap + 5})
    lines, polys = _collections(figures.curves(tab, data))
    seed_lines = [c for c in lines if c.get_linewidths()[0] == 0.7]
    assert sum(len(c.get_segments()) for c in seed_lines) == 3  # the small cell's seeds, one line each
    assert len(polys) == 1 and len(polys[0].get_paths()) == 1
    # alone in the figure, the band spans exactly its seeds' lowest and highest values: the panel's
    # scale is those values widened by 5% of their range each way
    (band,) = _collections(figures.curves(*_inputs({"many": cap + 5})))[1]
    ys = band.get_paths()[0].vertices[:, 1]
    assert abs(ys.max() - 1.05 / 1.1) < 1e-9 and abs(ys.min() - 0.05 / 1.1) < 1e-9
    assert "band" in figures._band_note(tab, data) and figures._band_note(*_inputs({"few": cap})) == ""


def test_the_svg_does_not_grow_with_the_seeds_of_a_banded_cell():
    cap = figures.SEED_LINES_MAX
    small = figures.svg(figures.curves(*_inputs({"a": cap + 1, "b": cap + 1})), "s")
    large = figures.svg(figures.curves(*_inputs({"a": 10 * cap, "b": 10 * cap})), "s")
    assert abs(len(large) - len(small)) < 0.05 * len(small), (len(small), len(large))


def test_the_figures_are_drawn_once_for_the_same_inputs_and_again_for_others(monkeypatch, tmp_path):
    from types import SimpleNamespace

    monkeypatch.setenv("ABLATE_CACHE", str(tmp_path))
    study = SimpleNamespace(name="s", search=None, margin=1.0, factors={"mechanism": ["a", "b"]})
    tab, data = _inputs({"a": 3, "b": 4})
    drawn = []
    real = figures._builders  # what svgs draws from (the drawing itself may run in forked processes)
    monkeypatch.setattr(figures, "_builders", lambda *a: drawn.append(1) or real(*a))
    first = figures.svgs(study, tab, data)
    assert [stem for stem, _, _ in first] == ["curves"] and len(drawn) == 1
    assert figures.svgs(study, tab, data) == first and len(drawn) == 1  # read back, the same bytes
    data["curves"]["a"][0][2] += 1e-9  # one value of one epoch of one seed
    figures.svgs(study, tab, data)
    assert len(drawn) == 2
    assert figures.figures_key(SimpleNamespace(**{**vars(study), "search": {"n_trials": 3}}), tab, data) is None
    monkeypatch.setenv("ABLATE_CACHE", "off")
    assert figures.svgs(study, tab, data) and len(drawn) == 3


def test_the_figures_key_is_the_same_in_another_process():
    """The key is read back by later reports, each its own process: nothing in it may be an object's
    address (matplotlib's raw backend setting can be a sentinel object)."""
    import subprocess
    import sys
    from types import SimpleNamespace

    code = ("import sys; sys.path.insert(0, 'tests/report'); from types import SimpleNamespace; "
            "from test_report_curves import _inputs; from ablate.report import figures; "
            "print(figures.figures_key(SimpleNamespace(name='s', search=None, margin=1.0, "
            "factors={'mechanism': ['a', 'b']}), *_inputs({'a': 3, 'b': 4})))")
    from support import REPO

    theirs = [subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
              .stdout.strip() for _ in range(2)]
    study = SimpleNamespace(name="s", search=None, margin=1.0, factors={"mechanism": ["a", "b"]})
    assert theirs == [figures.figures_key(study, *_inputs({"a": 3, "b": 4}))] * 2
