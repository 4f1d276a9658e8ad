"""`ar report --html FILE.html`: the morning page, one self-contained file (no network, no
scripts): the summary, the progress plot inline (when matplotlib is there), the runs with their
verdicts and notes, and for each kept change the diff of train.py against the one it replaced.
"""

from __future__ import annotations

import base64
import difflib
import html
import tempfile
from pathlib import Path

from ar import results_log
from ar.durable import write_bytes_atomic
from ar.errors import ArError
from ar.layout import ExperimentPaths
from ar.lines import number

MAX_ROWS = 500  # the latest runs in the table; the page stays small after any night
MAX_DIFFS = 50  # the latest kept changes
MAX_DIFF_LINES = 400

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #eee; vertical-align: top; }
tr.advance td { background: #e8f5e9; } tr.crash td, tr.timeout td, tr.interrupted td { background: #fdecea; }
pre.diff { background: #f7f7f7; padding: 8px; overflow-x: auto; font-size: 12px; }
.add { color: #1b5e20; } .del { color: #b71c1c; } .meta { color: #777; }
img { max-width: 100%; } .summary td:first-child { color: #555; width: 12em; }
"""


def write_html(paths: ExperimentPaths, target: Path, data: dict) -> str:
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>autoresearch: {_e(paths.slug)}</title>",
             f"<style>{STYLE}</style></head><body>", f"<h1>autoresearch report: {_e(paths.slug)}</h1>"]
    parts += _summary(data)
    parts += _plot(paths)
    rows = list(results_log.iter_rows(paths.results))
    parts += _runs_table(rows)
    parts += _kept_diffs(paths, rows)
    parts.append("</body></html>\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(target, "\n".join(parts).encode())
    return str(target)


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _summary(d: dict) -> list[str]:
    primary = d["primary"]
    base, best = d["baseline"], d["best"]
    change = ""
    if base and best and base["value"]:
        change = f" ({(best['value'] - base['value']) / abs(base['value']) * 100:+.1f}% vs baseline)"
    counts = ", ".join(f"{v} {k}" for k, v in sorted(d["counts"].items(), key=lambda kv: -kv[1]))
    facts = [
        ("goal", d["goal"]),
        ("primary metric", f"{primary['name']} ({primary['direction']})"),
        ("runs", f"{d['runs']}" + (f" ({counts})" if counts else "")),
        ("baseline", f"{base['run_id']} {number(base['value'])}" if base else "none"),
        ("best", f"{best['run_id']} {number(best['value'])}{change}" if best else "no valid run yet"),
        ("best checkpoint", d["checkpoint"] or "none"),
        ("terminated", d["terminated_by"] or "no"),
        ("constraints", ", ".join(d["constraints"]) or "none"),
        ("mutation scope", d["mutation_scope"] or "-"),
    ]
    return ["<h2>Summary</h2><table class='summary'>", *(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in facts), "</table>"]


def _plot(paths: ExperimentPaths) -> list[str]:
    from ar.plot import write_plot

    with tempfile.TemporaryDirectory(prefix="ar-plot-") as tmp:
        png = Path(tmp) / "progress.png"
        try:
            write_plot(paths, png)
        except ArError:  # no matplotlib: the page without its picture
            return ["<h2>Progress</h2><p>(no plot: install the <code>plot</code> extra, matplotlib, to draw it)</p>"]
        encoded = base64.b64encode(png.read_bytes()).decode()
    return ["<h2>Progress</h2>", f"<img alt='progress of {_e(paths.slug)}' src='data:image/png;base64,{encoded}'>"]


def _runs_table(rows: list[dict]) -> list[str]:
    shown = rows[-MAX_ROWS:]
    out = [f"<h2>Runs ({len(rows)}{f', the last {MAX_ROWS}' if len(rows) > MAX_ROWS else ''})</h2>",
           "<table id='runs'><tr><th>run</th><th>started</th><th>status</th><th>verdict</th><th>value</th><th>wall s</th><th>note</th></tr>"]
    for row in shown:
        out.append(f"<tr class='{_e(row['verdict'])}'><td>{_e(row['run_id'])}</td><td>{_e(row['started_at'])}</td>"
                   f"<td>{_e(row['status'])}</td><td>{_e(row['verdict'])}</td><td>{_e(number(row['value']))}</td>"
                   f"<td>{_e(row.get('wall_s', ''))}</td><td>{_e(row.get('note', ''))}</td></tr>")
    out.append("</table>")
    return out


def _kept_diffs(paths: ExperimentPaths, rows: list[dict]) -> list[str]:
    kept = [row for row in rows if row["verdict"] == "advance"]
    out = [f"<h2>Kept changes ({len(kept)}{f', the last {MAX_DIFFS}' if len(kept) > MAX_DIFFS else ''})</h2>"]
    previous_name, previous = "train.py.baseline", _lines(paths.baseline_py)
    for index, row in enumerate(kept):
        current = _lines(paths.run(row["run_id"]).train_py)
        if index >= len(kept) - MAX_DIFFS:
            diff = list(difflib.unified_diff(previous, current, previous_name, f"{row['run_id']}/train.py", n=2))
            cut = len(diff) > MAX_DIFF_LINES
            body = "".join(_diff_line(line) for line in diff[:MAX_DIFF_LINES]) or "<span class='meta'>(no change to train.py)</span>"
            out.append(f"<h3 id='diff-{_e(row['run_id'])}'>{_e(row['run_id'])} {_e(number(row['value']))}: {_e(row.get('note', ''))}</h3>")
            out.append(f"<pre class='diff'>{body}{'<span class=meta>... (cut)</span>' if cut else ''}</pre>")
        previous_name, previous = f"{row['run_id']}/train.py", current
    return out


def _diff_line(line: str) -> str:
    kind = "add" if line.startswith("+") and not line.startswith("+++") else "del" if line.startswith("-") and not line.startswith("---") else "meta" if line.startswith(("@@", "---", "+++")) else ""
    text = _e(line if line.endswith("\n") else line + "\n")
    return f"<span class='{kind}'>{text}</span>" if kind else text


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    except OSError:
        return []
