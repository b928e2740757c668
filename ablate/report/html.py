"""The study report as one self-contained HTML file: inline CSS, figures inlined as SVG, a
sortable table with coloured verdicts, and one small inline script (column sorting). It needs no
network and no outside library: it opens from a laptop on a plane.

The text sections (question, verdicts, per-class IoU, failures, pruned trials, provenance) are the
Markdown report's, rendered by markdown-it-py (CommonMark with tables; raw HTML off), so the two
never disagree and nested lists stay lists. The main table is built from
:func:`ablate.report.rows.table` with one ``data-sort`` value per cell.
"""
from __future__ import annotations

import html
import math

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


def _parser():
    """CommonMark with tables, raw HTML off (the report's text is data, never markup); every table
    the Markdown holds gets the sortable class."""
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    md.add_render_rule("table_open", lambda self, tokens, idx, options, env: '<table class="sortable">\n')
    return md


def _only_images(tokens: list, i: int) -> list | None:
    """The image tokens of the paragraph opening at ``tokens[i]`` when it holds nothing but images."""
    if tokens[i].type != "paragraph_open" or i + 1 >= len(tokens) or tokens[i + 1].type != "inline":
        return None
    kids = [k for k in tokens[i + 1].children or [] if not (k.type in ("softbreak", "hardbreak")
                                                              or (k.type == "text" and not k.content.strip()))]
    return kids if kids and all(k.type == "image" for k in kids) else None


def render_markdown(md: str, first_table: str | None = None, figure=None) -> str:
    """``md`` rendered by markdown-it-py (CommonMark + tables): nested lists, a list right after a
    paragraph line and inline code all as CommonMark reads them. ``first_table``: HTML put in place
    of the first table; ``figure``: a function (alt text, link) -> HTML put in place of each image
    of a paragraph that holds only images."""
    from markdown_it.token import Token

    parser = _parser()
    tokens, out, i, replaced = parser.parse(md), [], 0, first_table is None
    while i < len(tokens):
        t, images = tokens[i], _only_images(tokens, i) if figure else None
        if t.type == "table_open" and not replaced:
            i = next(j for j in range(i, len(tokens)) if tokens[j].type == "table_close") + 1
            out.append(Token("html_block", "", 0, content=first_table + "\n"))
            replaced = True
            continue
        if images is not None:
            html_figs = "".join(figure(k.content, k.attrs.get("src", "")) for k in images)
            out.append(Token("html_block", "", 0, content=html_figs + "\n"))
            i += 3  # paragraph_open, inline, paragraph_close
            continue
        out.append(t)
        i += 1
    return parser.renderer.render(out, parser.options, {})


def _num(x, scale: float = 1.0, digits: int = 1) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * scale:.{digits}f}"


def main_table(tab: dict) -> str:
    """The table of cells with coloured verdicts; every column sorts by a number where it has one."""
    heads = ["cell", "mechanism", "mIoU mean", "± std", "95% CI", "learned", "Δ vs baseline [corrected CI]", "attn params",
             "attn MFLOPs/img", "attn fwd+bwd ms", "attn peak MiB", "seeds", "verdict"]
    out = ['<table class="sortable" id="main-table"><thead><tr>' + "".join(f"<th>{h}</th>" for h in heads)
           + "</tr></thead><tbody>"]
    for r in tab["rows"]:
        kind = {"baseline": "baseline", "missing": "inconclusive"}.get(r["role"], r.get("verdict", "inconclusive"))
        verdict = {"baseline": "baseline", "missing": "inconclusive (needs ≥ 2 seeds in both cells)"}.get(
            r["role"], r.get("verdict_text", ""))
        ci = "" if r["ci"] is None else f"[{_num(r['ci'][0], 100)}, {_num(r['ci'][1], 100)}]" + \
            ("†" if r.get("ci_clipped") else "")
        k = r.get("learned")  # (k, n, Clopper-Pearson low, high) or None
        learned = ("—", "") if k is None else (f"{k[0]}/{k[1]} [{k[2]:.2f}, {k[3]:.2f}]", f"{k[0] / max(1, k[1]):.6f}")
        if r["role"] == "compared":
            iv = r["delta_ci"]
            delta = f"{100 * r['delta']:+.1f} " + ("[—]" if iv is None else
                                                    f"[{100 * iv[0]:+.1f}, {100 * iv[1]:+.1f}]") + \
                ("†" if r.get("delta_clipped") else "")
            dsort = f"{100 * r['delta']:.6f}"
        else:
            delta, dsort = ("baseline" if r["role"] == "baseline" else "n/a"), "0" if r["role"] == "baseline" else ""
        name = html.escape(r["title"]) + (" <em>(reference)</em>" if r["reference"] else "") + \
            (' <span title="a seed first reached the learned threshold in the last third of the epochs while another '
             'has not yet">(budget-limited)</span>'
             if r["limited"] else "")
        cells = [(name, r["title"], ""), (html.escape(r["mechanism"]), r["mechanism"], ""),
                 (_num(r["mean"], 100), _num(r["mean"], 100, 6), "num"), (_num(r["std"], 100), _num(r["std"], 100, 6),
                                                                          "num"),
                 (ci, _num(r["ci"][0], 100, 6) if r["ci"] else "", "num"), (learned[0], learned[1], "num"),
                 (delta, dsort, "num"),
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
    """The HTML page: the Markdown report rendered by :func:`render_markdown`, its first table
    replaced by :func:`main_table` and its image links by the inline SVGs (``svgs``: file name ->
    (caption, SVG text)); an image with no SVG is left out."""
    def figure(alt: str, link: str) -> str:
        cap, svg = svgs.get(link, (alt, None))
        if svg is None:
            return ""
        return (f'<figure class="figure" id="fig-{html.escape(link.rsplit("/", 1)[-1])}">{_strip_svg(svg)}'
                f"<figcaption>{html.escape(cap)}</figcaption></figure>")

    body = render_markdown(md, main_table(tab), figure)
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{html.escape(study.name)}"
            f" — ablate report</title><style>{STYLE}</style></head><body>\n" + body
            + f"\n<script>{SCRIPT}</script>\n</body></html>\n")
