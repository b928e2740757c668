"""Readable tables (issue 30 item 4): a cell's display ``label:`` (never in its key), per-class IoU
headed by the task's class names, and the HTML page's Markdown rendered by markdown-it-py."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest

from ablate.data.synthetic import CLASS_NAMES, TASKS, make_split, SceneConfig
from ablate.config.errors import StudyError
from ablate.report.formats import class_names
from ablate.report.html import render_markdown
from ablate.study.load import load_study

from support import tiny_study


def _load(tmp_path, name="lab", **overrides):
    return load_study(tiny_study(tmp_path, name=name, **overrides))


def test_labels_name_rows_and_leave_every_key_as_it_was(tmp_path):
    plain = _load(tmp_path, "plain", references=[{"mechanism": "none"}])
    named = _load(tmp_path, "named", references=[{"mechanism": "none", "label": "no attention"}],
                  labels={"gcn=on": "GloRe + GCN"})
    assert [c.key for c in named.cells()] == [c.key for c in plain.cells()]
    assert named.cells() == plain.cells()  # equality ignores the label too
    assert [c.title() for c in named.cells()] == ["GloRe + GCN", "gcn=off", "no attention"]
    assert [c.setting() for c in named.cells()] == [c.title() for c in plain.cells()]


@pytest.mark.parametrize("change, key", [
    ({"labels": {"gcn=maybe": "x"}}, "labels.gcn=maybe"),                       # no such cell
    ({"labels": {"gcn=on": "x" * 41}}, "labels.gcn=on"),                        # too long
    ({"labels": {"gcn=on": "a | b"}}, "labels.gcn=on"),                         # breaks a Markdown table
    ({"labels": {"gcn=on": "gcn=off"}}, "labels"),                              # two rows would read the same
    ({"labels": ["gcn=on"]}, "labels"),                                         # not a mapping
    ({"references": [{"mechanism": "none", "label": 3}]}, "references[0].label"),
])
def test_a_bad_label_is_an_error_naming_its_key(tmp_path, change, key):
    with pytest.raises(StudyError) as err:
        _load(tmp_path, **change)
    assert f"key '{key}'" in str(err.value)


def test_class_names_match_what_each_generator_writes():
    """Every synthetic task names as many classes as it has, and its generator writes each label
    value the names cover (and none beyond, but the ignore index)."""
    for task, (_, n, _) in TASKS.items():
        assert len(CLASS_NAMES[task]) == n == len(set(CLASS_NAMES[task]))
        _, labels = make_split(SceneConfig(task=task, train_images=4, val_images=24), "val")
        seen = set(labels.unique().tolist()) - {255}
        assert seen == set(range(n)), task
    assert class_names(SceneConfig(task="pairing"), 3) == ["background", "colour alone", "colour repeated"]
    assert class_names(SceneConfig(task="pairing"), 4) == [f"class {i}" for i in range(4)]  # count mismatch
    assert class_names(object(), 2) == ["class 0", "class 1"]  # a plugin's task


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.path, self.nested = [], 0

    def handle_starttag(self, tag, attrs):
        self.path.append(tag)
        if tag == "ul" and self.path.count("ul") == 2 and self.path[-2] == "li":
            self.nested += 1

    def handle_endtag(self, tag):
        while self.path and self.path.pop() != tag:
            pass


def test_nested_lists_and_a_list_after_a_paragraph_line_render_as_lists():
    md = ("**Reading** (seed 0 / seed 1).\n- **`a`** first\n  - inner one\n  - inner two\n- second\n\n"
          "| x | y |\n|---|---|\n| 1 | 2 |\n\n| z |\n|---|\n| 3 |\n")
    page = render_markdown(md, first_table="<table id=main-table></table>")
    parser = _Tags()
    parser.feed(page)
    assert parser.nested == 1 and page.count("<li>") == 4 and "- " not in page
    assert "<code>a</code>" in page and "<strong>" in page
    assert page.count("<table") == 2 and 'id=main-table' in page and '<table class="sortable">' in page
    assert "<script>" not in render_markdown("<script>alert(1)</script>")  # raw HTML stays text


def test_every_format_names_a_labelled_row_by_its_label(tmp_path):
    """A hand-written storage (two seeds of each cell, no training): the label is the row name in
    the Markdown, HTML and JSON, the per-class table is headed by the task's class names, and the
    provenance's key list keeps the full setting."""
    import json

    import optuna

    from ablate.storage import records as st
    from ablate.report.command import write_report

    study = _load(tmp_path, references=[{"mechanism": "none", "label": "no attention"}],
                  labels={"gcn=on": "GloRe + GCN"})
    url = str(tmp_path / "runs" / "optuna.journal")
    ostudy = st.load_or_create(st.open_storage(url), study.name)
    means = {c.key: m for c, m in zip(study.cells(), (0.8, 0.45, 0.4))}
    for cell, seed in study.trials():
        value = means[cell.key] + 0.02 * seed
        ostudy.add_trial(optuna.trial.create_trial(value=value, user_attrs={
            "cell_key": cell.key, "seed": seed, "config": json.dumps(study.trial_config(cell, seed)),
            "cell": json.dumps(cell.label_dict), "class_iou": [0.9, 0.8, 0.7, 0.6, 0.5], "wall_s": 2.0,
            "compute_s": 1.5, "curve": [value], "best_val_miou": value, "attention_params": 10,
            "attention_flops": 100, "total_params": 500}))
    md_path = write_report(study, url, str(tmp_path / "reports"), wandb=False)
    md = md_path.read_text()
    section = md.split("## Per-class IoU")[1].split("\n## ")[0]
    head = next(ln for ln in section.splitlines() if ln.startswith("| cell"))
    assert [h.strip() for h in head.strip("|").split("|")][1:6] == list(CLASS_NAMES["global_cue"])
    rows = [ln.split("|")[1].strip() for ln in section.splitlines() if ln.startswith("| ") and ln != head]
    assert rows == ["GloRe + GCN", "gcn=off", "no attention"]
    assert "gcn=on (GloRe + GCN) = `" in md and "mechanism=none (no attention) = `" in md
    page = md_path.with_suffix(".html").read_text()
    assert ">GloRe + GCN</td>" in page and '<th style="text-align:right">horizontal, red cue</th>' in page
    table = json.loads(md_path.with_suffix(".json").read_text())
    assert [r["cell"] for r in table["rows"]] == ["GloRe + GCN", "gcn=off", "no attention"]
    assert table["rows"][0]["class_names"] == list(CLASS_NAMES["global_cue"])
