"""The report's other formats (issue 14): figures, HTML, TeX, CSV, JSON and the W&B summary run,
from a small synthetic storage written by hand (no training), so the module takes seconds.

The storage: a GloRe ``gcn`` on/off grid plus a ``none`` reference, seeds 0-2; gcn=off seed 2 was
pruned, none seed 2 failed for a reason of its own, and only the gcn=off trials carry per-image
intersection/union counts (the others are as if they predated them)."""
from __future__ import annotations

import csv
import glob
import json
import math
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from ablate.report.command import main as report_main
from ablate.report.command import write_report
from ablate.stats import bootstrap_miou, cell_bootstrap
from ablate.study.load import load_study

from support import run_cli, tiny_study
from support.reports import build, wandb_records
from support.reports import EPOCHS, SEEDS, image_counts_of







@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """The study's reports written once, with the W&B summary run (offline)."""
    tmp = tmp_path_factory.mktemp("fmt")
    saved = dict(os.environ)
    os.environ["WANDB_MODE"] = "offline"
    try:
        study, url, truth = build(tmp)
        md = write_report(study, url, str(tmp / "reports"), wandb=True, run_dir=tmp / "runs")
        leaked = os.environ.get("WANDB_SERVICE") != saved.get("WANDB_SERVICE")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert not leaked, "the summary run left its W&B service for later child processes to connect to"
    return {"study": study, "url": url, "truth": truth, "md": md, "dir": tmp / "reports", "run_dir": tmp / "runs"}


def _main_table(text: str) -> dict:
    lines = [ln for ln in text.split("\n## ")[0].splitlines() if ln.startswith("| ")]
    head = [h.strip() for h in lines[0].strip("|").split("|")]
    return {r.split("|")[1].strip(): dict(zip(head, (c.strip() for c in r.strip("|").split("|")))) for r in lines[1:]}


def test_every_format_is_written_beside_the_markdown(written):
    d, name = written["dir"], written["study"].name
    for ext in ("md", "html", "tex", "csv", "json"):
        assert (d / f"{name}.{ext}").stat().st_size > 0, ext
    md = written["md"].read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert {Path(x).name for x in links} == {"forest.svg", "curves.svg", "cost.svg"}  # one factor: no heat map
    for link in links:
        assert (d / link).is_file() and (d / link).read_text().lstrip().startswith("<?xml")


def test_csv_has_one_row_per_trial_with_its_values(written):
    study, truth = written["study"], written["truth"]
    with open(written["dir"] / f"{study.name}.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(truth) == len(study.trials())
    titles = {c.key: c for c in study.cells()}
    for r in rows:
        state, value, curve = truth[(r["cell_key"], int(r["seed"]))]
        cell = titles[r["cell_key"]]
        assert r["state"] == state and r["cell"] == cell.title() and r["mechanism"] == cell.mechanism
        assert r["gcn"] == ("" if "gcn" not in cell.label_dict else str(cell.label_dict["gcn"]).lower())
        if value is None:
            assert r["val_miou_pts"] == ""
        else:
            assert float(r["val_miou_pts"]) == pytest.approx(100 * value, abs=1e-9)
        epochs = [r[f"val_miou_pts_epoch_{e + 1}"] for e in range(EPOCHS)]
        assert [float(v) for v in epochs if v] == pytest.approx([100 * v for v in curve])
        assert int(r["epochs_run"]) == len(curve) and r["epochs_planned"] == str(EPOCHS)
    failed = [r for r in rows if r["state"] == "fail"]
    assert [r["fail_reason"] for r in failed] == ["non-finite loss"] and failed[0]["fail_kind"] == "error"
    done = [r for r in rows if r["state"] == "complete"]
    assert all(float(r["attn_fwd_bwd_ms"]) > 0 for r in done if r["mechanism"] == "glore")


def test_json_table_equals_the_markdown_numbers(written):
    study = written["study"]
    table = json.loads((written["dir"] / f"{study.name}.json").read_text())
    md = _main_table(written["md"].read_text())
    assert [r["cell"] for r in table["rows"]] == [c.title() for c in study.cells()]
    assert table["unit"].startswith("mIoU points") and table["margin"] == study.margin
    level = next(h for h in next(iter(md.values())) if h.startswith("Δ"))
    assert level == "Δ vs baseline [corrected CI]"  # each family's level is in the judging sentence
    pct = f"{100 * table['delta_interval_level']:.2f}".rstrip("0").rstrip(".")
    assert f"Δ intervals at {pct}%" in written["md"].read_text()
    for r in table["rows"]:
        row = md[r["cell"] + (" (reference)" if r["reference"] else "")]
        assert row["mIoU mean ± std"].split(" (")[0] == f"{r['mean']:.1f} ± {r['std']:.1f}"
        assert row["95% CI"] == ("n/a" if r["ci95"] is None else f"[{r['ci95'][0]:.1f}, {r['ci95'][1]:.1f}]")
        assert row["seeds"].startswith(f"{r['n']}/{r['seeds_planned']}")
        if r["role"] == "compared":
            assert row[level].startswith(f"{r['delta']:+.1f}")
            assert row["verdict"].strip("*") == r["verdict_text"]
            if r["delta_ci"]:
                assert row[level].rstrip("†").endswith(f"[{r['delta_ci'][0]:+.1f}, {r['delta_ci'][1]:+.1f}]")
        assert row["attn MFLOPs/img"] == ("" if r["attn_mflops"] is None else f"{r['attn_mflops']:.2f}")
    # the values are the storage's: gcn=on's mean is the mean of its three final values
    on = next(r for r in table["rows"] if r["cell"] == "gcn=on")
    finals = [v for (k, _), (s, v, _) in written["truth"].items() if k == on["key"] and s == "complete"]
    assert on["mean"] == pytest.approx(100 * sum(finals) / len(finals))


def test_figures_have_content_for_each_cell_and_are_deterministic(written, tmp_path):
    study, d = written["study"], written["dir"]
    curves = (d / study.name / "curves.svg").read_text()
    forest = (d / study.name / "forest.svg").read_text()
    cost = (d / study.name / "cost.svg").read_text()
    for c in study.cells():  # every cell has finished seeds here: one panel each, titled
        assert re.search(f">{re.escape(c.title())}( \\(budget-limited\\))?<", curves)
    titles = [c.title() for c in study.cells()]
    for other in titles[1:]:
        assert f">{other} vs gcn=on<" in forest
    assert "attention MFLOPs / image" in cost and "attention fwd+bwd ms" in cost
    # one line per seed plus the mean, per cell with complete trials (2 + 1, 3 + 1, 2 + 1), drawn as line
    # collections (the last two: the seeds' and the means'), beside each panel's frame and grid lines
    groups = re.findall(r'<g id="LineCollection_\d+">(.*?)</g>', curves, re.S)
    drawn = [len(re.findall(r'<path d="M [^"]*L', g)) for g in groups]
    assert len(groups) >= 4 and drawn[-1] == 3 and sum(drawn[2:-1]) == 2 + 3 + 2, drawn
    again = write_report(study, written["url"], str(tmp_path / "again"), wandb=False)
    for stem in ("curves", "forest"):  # cost: latency is measured anew each time
        assert (again.parent / study.name / f"{stem}.svg").read_text() == (d / study.name / f"{stem}.svg").read_text()


class _Rows(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.rows, self.refs = [], 0, []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table":
            self.stack.append(a.get("id"))
        if tag == "tr" and self.stack and self.stack[-1] == "main-table" and "data-key" in a:
            self.rows += 1
        for k in ("src", "href"):
            if a.get(k):
                self.refs.append(a[k])
        if tag == "link":
            self.refs.append(str(a))

    def handle_endtag(self, tag):
        if tag == "table":
            self.stack.pop()


def test_html_is_self_contained_with_one_row_per_cell(written):
    study = written["study"]
    page = (written["dir"] / f"{study.name}.html").read_text()
    parser = _Rows()
    parser.feed(page)
    assert parser.rows == len(study.cells())
    assert [r for r in parser.refs if not r.startswith("#")] == []  # nothing loaded from anywhere
    assert "<script src" not in page and page.count("<svg") == 3
    assert 'class="v-baseline"' in page and "Image-level intervals" in page


def test_image_level_interval_only_where_trials_have_counts(written):
    md = written["md"].read_text()
    section = md.split("## Image-level intervals")[1].split("\n## ")[0]
    rows = {ln.split("|")[1].strip(): ln for ln in section.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert "n/a (trials predate per-image counts)" in rows["gcn=on"]
    assert "n/a (trials predate per-image counts)" in rows["mechanism=none"]
    # gcn=off: the complete seeds 0 and 1 (seed 2 was pruned); the cell's interval resamples both
    # seeds and images together, each seed's interval images alone
    boots = [bootstrap_miou(*image_counts_of(s), seed=0) for s in (0, 1)]
    cell = cell_bootstrap([image_counts_of(s) for s in (0, 1)], n_boot=2000, seed=0)
    assert f"[{100 * cell.lo:.1f}, {100 * cell.hi:.1f}]" in rows["gcn=off"]
    assert f"0: [{100 * boots[0].lo:.1f}, {100 * boots[0].hi:.1f}]" in rows["gcn=off"]
    assert "5 finished trial(s) have no per-image counts" in section  # gcn=on 3, none 2


def _tex_compile(tmp_path: Path, body: str, booktabs: bool) -> subprocess.CompletedProcess:
    (tmp_path / "wrapper.tex").write_text("\\documentclass{article}\n" + ("\\usepackage{booktabs}\n" if booktabs else "")
                                          + "\\begin{document}\n\\begin{table}\\centering\n\\input{table.tex}\n"
                                          "\\end{table}\n\\end{document}\n")
    (tmp_path / "table.tex").write_text(body)
    return subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "wrapper.tex"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_tex_table_has_each_cell_and_the_footnote(written):
    study = written["study"]
    tex = (written["dir"] / f"{study.name}.tex").read_text()
    table = json.loads((written["dir"] / f"{study.name}.json").read_text())
    for r in table["rows"]:
        assert f"{r['mean']:.1f} $\\pm$ {r['std']:.1f}" in tex
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "n = 2--3 seeds per cell" in tex and "Holm correction over 2 comparison(s)" in tex
    assert "margin $\\pm$1 points" in tex and "95\\% Student t" in tex


@pytest.mark.parametrize("booktabs", [True, False])
def test_tex_compiles_with_pdflatex(written, tmp_path, booktabs):
    if not shutil.which("pdflatex"):
        if os.environ.get("ABLATE_REQUIRE_LATEX"):
            pytest.fail("pdflatex is not installed but ABLATE_REQUIRE_LATEX is set (CI installs texlive)")
        pytest.skip("pdflatex is not installed (Debian: texlive-latex-base texlive-latex-recommended)")
    if booktabs and subprocess.run(["kpsewhich", "booktabs.sty"], capture_output=True, text=True).stdout == "":
        if os.environ.get("ABLATE_REQUIRE_LATEX"):
            pytest.fail("booktabs.sty is not installed but ABLATE_REQUIRE_LATEX is set (CI installs it)")
        pytest.skip("booktabs.sty is not installed (Debian: texlive-latex-recommended)")
    tex = (written["dir"] / f"{written['study'].name}.tex").read_text()
    res = _tex_compile(tmp_path, tex, booktabs)
    assert res.returncode == 0, res.stdout[-2000:]
    assert (tmp_path / "wrapper.pdf").stat().st_size > 1000
    assert "Undefined control sequence" not in res.stdout and "Missing" not in res.stdout




def test_wandb_summary_run_holds_the_table_and_the_figures(written):
    study = written["study"]
    runs = glob.glob(str(written["run_dir"] / "report" / "wandb" / "offline-run-*"))
    assert len(runs) == 1
    recs = wandb_records(glob.glob(runs[0] + "/run-*.wandb")[0])
    run = next(r.run for r in recs if r.WhichOneof("record_type") == "run")
    assert run.run_group == study.name and run.job_type == "report" and run.project == "ablate"
    history = {tuple(i.nested_key) or (i.key,): json.loads(i.value_json)
               for r in recs if r.WhichOneof("record_type") == "history" for i in r.history.item}
    assert history[("report/table", "_type")] == "table-file"
    assert history[("report/table", "nrows")] == len(study.cells())
    for stem in ("forest", "curves", "cost"):
        assert history[(f"report/{stem}", "_type")] == "image-file"
        png = Path(runs[0]) / "files" / history[(f"report/{stem}", "path")]
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and history[(f"report/{stem}", "width")] > 100
    logged = json.loads((Path(runs[0]) / "files" / history[("report/table", "path")]).read_text())
    table = json.loads((written["dir"] / f"{study.name}.json").read_text())
    means = {row[0]: row[logged["columns"].index("mean")] for row in logged["data"]}
    assert means == pytest.approx({r["cell"]: r["mean"] for r in table["rows"]})


def test_rewriting_the_report_updates_the_one_wandb_summary_run(tmp_path):
    """Every writing of the report logs to the study's one summary run: its id comes from the
    study's name and cells (resume='allow'), so two writings are two offline folders of one run,
    which ``wandb sync`` sends to that run; a study with other cells gets another id."""
    from ablate.report.wandb import summary_run_id

    saved = dict(os.environ)
    os.environ["WANDB_MODE"] = "offline"
    try:
        study, url, _ = build(tmp_path)
        for out in ("first", "again"):
            write_report(study, url, str(tmp_path / out), wandb=True, run_dir=tmp_path / "runs")
    finally:
        os.environ.clear()
        os.environ.update(saved)
    runs = sorted(glob.glob(str(tmp_path / "runs" / "report" / "wandb" / "offline-run-*")))
    assert len(runs) == 2, runs
    ids = [next(r.run for r in wandb_records(glob.glob(d + "/run-*.wandb")[0])
                if r.WhichOneof("record_type") == "run").run_id for d in runs]
    assert ids == [summary_run_id(study)] * 2 and all(d.endswith("-" + ids[0]) for d in runs)
    assert summary_run_id(load_study(study.path)) == ids[0]  # read again: the same id
    (tmp_path / "fewer").mkdir()
    fewer = load_study(tiny_study(tmp_path / "fewer", name="fmt", seeds=SEEDS, train={"epochs": EPOCHS}))
    assert summary_run_id(fewer) != ids[0]  # the same name without the reference cell: another run


def test_report_command_writes_all_formats_and_wandb_only_when_asked(tmp_path, capsys):
    study, url, _ = build(tmp_path)
    rep = tmp_path / "rep"
    assert report_main([study.path, "--storage", url, "--reports-dir", str(rep), "--run-dir", str(tmp_path / "r")]) == 0
    assert "fmt.html" in capsys.readouterr().out
    assert sorted(p.name for p in rep.iterdir()) == ["fmt", "fmt.csv", "fmt.html", "fmt.json", "fmt.md", "fmt.tex"]
    assert not (tmp_path / "r" / "report").exists()
    assert not math.isnan(json.loads((rep / "fmt.json").read_text())["rows"][0]["mean"])


def test_a_run_leaves_every_format_and_one_wandb_summary_run(tmp_path):
    """``python -m ablate.run``: the Markdown, HTML, TeX, CSV, JSON, the figure folder, the trials'
    W&B runs and one summary run beside them (job_type report, the trials' group)."""
    path = tiny_study(tmp_path, name="e2e", seeds=[0], factors={"gcn": [True]}, train={"epochs": 1},
                      data={"train_images": 16, "val_images": 8})
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/e2e"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr + res.stdout
    rep = tmp_path / "reports"
    assert {p.name for p in rep.iterdir()} >= {"e2e.md", "e2e.html", "e2e.tex", "e2e.csv", "e2e.json", "e2e"}
    assert (rep / "e2e" / "curves.svg").is_file()
    trials = glob.glob(str(tmp_path / "runs/e2e/wandb/offline-run-*"))
    summary = glob.glob(str(tmp_path / "runs/e2e/report/wandb/offline-run-*"))
    assert len(trials) == 1 and len(summary) == 1
    run = next(r.run for r in wandb_records(glob.glob(summary[0] + "/run-*.wandb")[0])
               if r.WhichOneof("record_type") == "run")
    trial = next(r.run for r in wandb_records(glob.glob(trials[0] + "/run-*.wandb")[0])
                 if r.WhichOneof("record_type") == "run")
    assert run.job_type == "report" and run.run_group == trial.run_group == "e2e" and run.project == trial.project
    # the trial run carries the cell key and the factors as top-level config keys (W&B's group-by)
    keys = {u.key for u in trial.config.update}
    assert {"cell_key", "gcn", "seed", "mechanism"} <= keys
    # the trainer stores per-image counts, so the image-level interval is there (one seed: its own)
    assert "## Image-level intervals" in (rep / "e2e.md").read_text()
    # --no-wandb: no summary run either
    res = run_cli(["ablate.run", str(path), "--run-dir", "runs/e2e", "--no-wandb"], cwd=tmp_path, timeout=600)
    assert res.returncode == 0 and len(glob.glob(str(tmp_path / "runs/e2e/report/wandb/offline-run-*"))) == 1


def test_reuse_costs_keeps_the_previous_reports_timings(tmp_path, capsys):
    study, url, _ = build(tmp_path)
    rep = tmp_path / "rep"
    args = [study.path, "--storage", url, "--reports-dir", str(rep)]
    assert report_main(args) == 0
    first = json.loads((rep / "fmt.json").read_text())
    key = first["rows"][0]["key"]
    assert first["costs"]["cells"][key]["ms"] > 0 and first["costs"]["cells"][key]["shape"] == [16, 8, 16, 16]
    first["costs"]["cells"][key]["ms"] = 123.456  # as if a quiet machine had measured this
    (rep / "fmt.json").write_text(json.dumps(first))
    assert report_main(args + ["--reuse-costs"]) == 0
    md = (rep / "fmt.md").read_text()
    assert _main_table(md)["gcn=on"]["attn fwd+bwd ms"] == f"123.46 (IQR {first['costs']['cells'][key]['iqr_ms']:.2f})"
    assert f"measured for the report written {first['costs']['measured']} and reused by `--reuse-costs`" in md
    assert json.loads((rep / "fmt.json").read_text())["costs"]["cells"][key]["ms"] == 123.456  # kept for next time
    # a previous measurement at another block shape is not reused: everything is measured again
    first["costs"]["cells"][key]["shape"] = [1, 1, 1, 1]
    (rep / "fmt.json").write_text(json.dumps(first))
    capsys.readouterr()
    assert report_main(args + ["--reuse-costs"]) == 0
    assert "measuring every cell" in capsys.readouterr().err
    md = (rep / "fmt.md").read_text()
    assert not _main_table(md)["gcn=on"]["attn fwd+bwd ms"].startswith("123.46") and "measured when this report was written" in md


def test_notes_below_the_report_are_kept_when_it_is_rewritten(tmp_path):
    study, url, _ = build(tmp_path)
    rep = tmp_path / "rep"
    args = [study.path, "--storage", url, "--reports-dir", str(rep)]
    assert report_main(args) == 0
    md = rep / "fmt.md"
    md.write_text(md.read_text() + "\n**Run.** Trained on the quiet machine, commit `abc1234`.\n- one note\n")
    assert report_main(args) == 0
    text = md.read_text()
    assert text.count("**Run.** Trained on the quiet machine") == 1 and text.rstrip().endswith("- one note")
    assert "<strong>Run.</strong> Trained on the quiet machine, commit <code>abc1234</code>." in \
        (rep / "fmt.html").read_text()


def test_a_two_factor_grid_gets_a_heat_map_with_each_entrys_interval(tmp_path):
    from ablate.report import figures
    from ablate.report.rows import table
    from ablate.stats import summarize

    study = load_study(tiny_study(tmp_path, name="grid", factors={"gcn": [True, False], "K": [4, 8]},
                                  baseline={"gcn": True}, seeds=SEEDS))
    values = {c.key: {s: 0.4 + 0.1 * i + 0.01 * s for s in SEEDS} for i, c in enumerate(study.cells())}
    rec = {"class_iou": [0.9, 0.5], "wall_s": 2.0, "compute_s": 1.5, "attention_params": 7, "attention_flops": 1000}
    data = {"values": values, "records": {k: [rec] * 3 for k in values}, "curves": {}, "pruned": [], "failed": [],
            "retry": []}
    text = figures.svg(figures.heatmap(study, table(study, data)), "grid")
    for c in study.cells():
        s = summarize(list(values[c.key].values()))
        assert f">{100 * s.mean:.1f}<" in text and f">[{100 * s.ci[0]:.1f}, {100 * s.ci[1]:.1f}]<" in text
    assert ">gcn<" in text and ">K<" in text and ">on<" in text and ">off<" in text
    one = load_study(tiny_study(tmp_path, name="one", seeds=SEEDS))  # one factor: no heat map
    assert figures.heatmap(one, table(one, {**data, "values": {}, "records": {}})) is None
