"""The HTML report looked at like a user would (issue 14 item 5): headless Chromium (Debian's
``chromium``) renders a copy of the page with a probe script added, which records script errors
and console.error calls, the rendered size of every figure, the main table's rows, and what a
click on a column header does to their order; ``--dump-dom`` hands the probe's record back.

Skipped where Chromium is not installed, except when ABLATE_REQUIRE_CHROMIUM is set (``.ci/run``
sets it and installs Chromium), where a missing browser fails the test."""
from __future__ import annotations

import html
import json
import re
import subprocess

import pytest

from ablate.report.command import write_report

from support.reports import CATCH, build, chromium


PROBE = """<script>(function () {
  var figs = Array.prototype.map.call(document.querySelectorAll("figure svg"), function (s) {
    var r = s.getBoundingClientRect(); return [r.width, r.height]; });
  var table = document.getElementById("main-table");
  function column(i) { return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
    return r.cells[i].getAttribute("data-sort"); }); }
  var before = column(2);
  table.tHead.rows[0].cells[2].click(); var asc = column(2);
  table.tHead.rows[0].cells[2].click(); var desc = column(2);
  var pre = document.createElement("pre"); pre.id = "probe";
  pre.textContent = JSON.stringify({figures: figs, rows: table.tBodies[0].rows.length, before: before, asc: asc,
                                    desc: desc, errors: window.__errors, height: document.body.scrollHeight});
  document.body.appendChild(pre);
})();</script>"""




def _render(exe: str, page: str, tmp_path, name: str) -> tuple[dict, str]:
    """Load ``page`` (with the probes added) in headless Chromium; returns the probe's record and
    Chromium's stderr (where it logs the page's console messages)."""
    page = page.replace("<head>", "<head>" + CATCH, 1).replace("</body>", PROBE + "</body>", 1)
    path = tmp_path / f"{name}.html"
    path.write_text(page)
    res = subprocess.run([exe, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
                          f"--user-data-dir={tmp_path / ('profile-' + name)}", "--window-size=1280,1000",
                          "--enable-logging=stderr", "--v=0", "--dump-dom", path.as_uri()],
                         capture_output=True, text=True, timeout=180)
    found = re.search(r'<pre id="probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"the probe did not run; chromium exit {res.returncode}: {res.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), res.stderr


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chromium")
    study, url, _ = build(tmp)
    md = write_report(study, url, str(tmp / "reports"), wandb=False)
    return study, md.with_suffix(".html").read_text()


def test_html_report_renders_without_errors_with_every_figure_and_one_row_per_cell(page, tmp_path):
    exe = chromium()
    study, text = page
    probe, stderr = _render(exe, text, tmp_path, "report")
    assert probe["errors"] == []
    assert [ln for ln in stderr.splitlines() if ":CONSOLE" in ln] == []
    assert len(probe["figures"]) == 3 and all(w > 100 and h > 50 for w, h in probe["figures"])
    assert probe["rows"] == len(study.cells())
    # a click on "mIoU mean" sorts the rows by it, a second click reverses them
    means = [float(v) for v in probe["before"]]
    assert [float(v) for v in probe["asc"]] == sorted(means)
    assert [float(v) for v in probe["desc"]] == sorted(means, reverse=True)
    assert probe["height"] > 1000


def test_the_check_sees_a_script_error(page, tmp_path):
    """The same check on a page that throws: the error is caught, so the test above can fail."""
    exe = chromium()
    _, text = page
    probe, stderr = _render(exe, text.replace("</body>", "<script>throw new Error('probe-error')</script></body>"),
                            tmp_path, "broken")
    assert any("probe-error" in e for e in probe["errors"])
    assert any("probe-error" in ln for ln in stderr.splitlines() if ":CONSOLE" in ln)
