"""The study report as one self-contained HTML file: inline CSS, figures inlined as SVG, a
sortable table with coloured verdicts, and one small inline script (column sorting). It needs no
network and no outside library: it opens from a laptop on a plane.

The text sections (question, verdicts, per-class IoU, failures, pruned trials, provenance) are the
Markdown report's, converted here by a small converter for the few constructs the report uses
(headings, paragraphs, lists, tables, bold, code, images), so the two never disagree. The main
table is built from :func:`ablate.report_rows.table` with one ``data-sort`` value per cell.
"""
from __future__ import annotations

import html
import math
import re

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#24292f;max-width:1200px;
margin:1.5em auto;padding:0 1em}
h1{font-size:1.7em;border-bottom:1px solid #d0d7de}h2{font-size:1.3em;border-bottom:1px solid #d0d7de;
margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #d0d7de;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f6f8fa;cursor:pointer;user-select:none}
th.sorted-asc::after{content:" ▲"}th.sorted-desc::after{content:" ▼"}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
code{background:#f6f8fa;padding:0 3px;border-radius:3px;font-size:90%}
.v-better{background:#dafbe1}.v-worse{background:#ffebe9}.v-budget{background:#fff1e5}
.v-equivalent{background:#ddf4ff}.v-inconclusive{background:#f6f8fa;color:#57606a}.v-baseline{font-weight:600}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{color:#57606a;font-size:13px}
.legend span{display:inline-block;padding:1px 6px;margin-right:6px;border:1px solid #d0d7de}
"""

SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (t) {
  t.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = t.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var asc = !th.classList.contains("sorted-asc");
      t.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
      th.classList.add(asc ? "sorted-asc" : "sorted-desc");
      function key(r) {
        var c = r.cells[col], v = c ? (c.getAttribute("data-sort") || c.textContent) : "";
        var n = parseFloat(v);
        return isNaN(n) ? v.toLowerCase() : n;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { x = String(x); y = String(y); }
        return (x < y ? -1 : x > y ? 1 : 0) * (asc ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _inline(text: str) -> str:
    """Escape, then the report's inline Markdown: **bold** and `code`."""
    text = html.escape(text, quote=False)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _md_table(lines: list[str]) -> str:
    head, body = _cells(lines[0]), [_cells(ln) for ln in lines[2:]]
    out = ['<table class="sortable"><thead><tr>' + "".join(f"<th>{_inline(h)}</th>" for h in head) + "</tr></thead>"]
    out.append("<tbody>" + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body)
               + "</tbody></table>")
    return "".join(out)


def markdown_blocks(md: str) -> list[tuple[str, str]]:
    """(kind, html) for each block of the Markdown report: heading, table, list, image, paragraph."""
    blocks, cur = [], []
    for line in md.splitlines() + [""]:
        if line.strip():
            cur.append(line)
            continue
        if not cur:
            continue
        first = cur[0]
        if first.startswith("#"):
            level = len(first) - len(first.lstrip("#"))
            blocks.append(("heading", f"<h{level}>{_inline(first.lstrip('#').strip())}</h{level}>"))
        elif first.startswith("|"):
            blocks.append(("table", _md_table(cur)))
        elif all(ln.startswith("- ") for ln in cur):
            blocks.append(("list", "<ul>" + "".join(f"<li>{_inline(ln[2:])}</li>" for ln in cur) + "</ul>"))
        elif all(ln.startswith("![") for ln in cur):
            blocks.append(("images", "\n".join(cur)))
        else:
            blocks.append(("paragraph", "<p>" + "<br>".join(_inline(ln) for ln in cur) + "</p>"))
        cur = []
    return blocks


def _num(x, scale: float = 1.0, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{digits}f}"


def main_table(tab: dict) -> str:
    """The table of cells with coloured verdicts; every column sorts by a number where it has one."""
    level = f"{100 * tab['info']['level']:.4g}%"
    heads = ["cell", "mechanism", "mIoU mean", "± std", "95% CI", f"Δ vs baseline [{level} CI]", "attn params",
             "attn MFLOPs/img", "attn fwd+bwd ms", "attn peak MiB", "seeds", "verdict"]
    out = ['<table class="sortable" id="main-table"><thead><tr>' + "".join(f"<th>{h}</th>" for h in heads)
           + "</tr></thead><tbody>"]
    for r in tab["rows"]:
        kind = {"baseline": "baseline", "missing": "inconclusive"}.get(r["role"], r.get("verdict", "inconclusive"))
        verdict = {"baseline": "baseline", "missing": "inconclusive (needs ≥ 2 seeds in both cells)"}.get(
            r["role"], r.get("verdict_text", ""))
        ci = "" if r["ci"] is None else f"[{_num(r['ci'][0], 100)}, {_num(r['ci'][1], 100)}]"
        if r["role"] == "compared":
            iv = r["delta_ci"]
            delta = f"{100 * r['delta']:+.1f} " + ("[not printable]" if iv is None else
                                                    f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]")
            dsort = f"{100 * r['delta']:.6f}"
        else:
            delta, dsort = ("baseline" if r["role"] == "baseline" else "n/a"), "0" if r["role"] == "baseline" else ""
        name = html.escape(r["title"]) + (" <em>(reference)</em>" if r["reference"] else "") + \
            (' <span title="mean curve still rising over its last third">(budget-limited)</span>'
             if r["limited"] else "")
        cells = [(name, r["title"], ""), (html.escape(r["mechanism"]), r["mechanism"], ""),
                 (_num(r["mean"], 100), _num(r["mean"], 100, 6), "num"), (_num(r["std"], 100), _num(r["std"], 100, 6),
                                                                          "num"),
                 (ci, _num(r["ci"][0], 100, 6) if r["ci"] else "", "num"), (delta, dsort, "num"),
                 (_num(r["attn_params"], 1, 0), _num(r["attn_params"], 1, 0), "num"),
                 (_num(r["attn_flops"], 1e-6, 2), _num(r["attn_flops"], 1e-6, 6), "num"),
                 (_num(r["attn_ms"], 1, 2), _num(r["attn_ms"], 1, 6), "num"),
                 (_num(r["attn_peak_mib"], 1, 2), _num(r["attn_peak_mib"], 1, 6), "num"),
                 (f"{r['n']}/{r['planned']}" + (f" ({r['pruned']} pruned)" if r["pruned"] else ""), str(r["n"]), "num"),
                 (html.escape(verdict), kind, f"v-{kind}")]
        out.append(f'<tr data-key="{html.escape(r["key"])}">' + "".join(
            f'<td class="{cls}" data-sort="{html.escape(str(sort))}">{text}</td>' for text, sort, cls in cells)
            + "</tr>")
    out.append("</tbody></table>")
    legend = "".join(f'<span class="v-{k}">{t}</span>' for k, t in (
        ("better", "better"), ("worse", "worse"), ("budget", "worse at this budget"),
        ("equivalent", "equivalent within ±margin"), ("inconclusive", "inconclusive")))
    return "".join(out) + f'<p class="legend">Verdicts: {legend} Click a column header to sort.</p>'


def _strip_svg(text: str) -> str:
    """The SVG element alone (no XML declaration or doctype), for inlining."""
    return text[text.index("<svg"):]


def render(study, tab: dict, md: str, svgs: dict[str, tuple[str, str]]) -> str:
    """The HTML page: the Markdown report's blocks, its first table replaced by :func:`main_table`
    and its image links by the inline SVGs (``svgs``: file name -> (caption, SVG text))."""
    body, replaced = [], False
    for kind, text in markdown_blocks(md):
        if kind == "table" and not replaced:
            body.append(main_table(tab))
            replaced = True
        elif kind == "images":
            for m in re.finditer(r"!\[([^\]]*)\]\(([^)]+)\)", text):
                cap, svg = svgs.get(m.group(2), (m.group(1), None))
                if svg is not None:
                    body.append(f'<figure class="figure" id="fig-{html.escape(m.group(2).rsplit("/", 1)[-1])}">'
                                f"{_strip_svg(svg)}<figcaption>{html.escape(cap)}</figcaption></figure>")
        else:
            body.append(text)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(study.name)}"
            f" — ablate report</title><style>{STYLE}</style></head><body>\n" + "\n".join(body)
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
