"""`ar report`: a bounded Markdown summary (the same size at 10 runs or 10,000).

It streams results.tsv once and keeps only fixed-size windows: the kept changes, the recent
failures, the last runs, and a 10-bucket trend of the primary metric.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import orjson

from ar import chain, results_log
from ar.best import best_value, load_best
from ar.durable import read_json_or_none
from ar.experiments import resolve_experiment
from ar.layout import ExperimentPaths
from ar.lines import number
from ar.tailback import log_tail
from ar.text import clip
from ar.settings import load_session
from ar.state import FAILURE_STATUSES, load_state
from ar.termination import terminated_by, with_chain

KEPT = 10
FAILURES = 5
LAST = 10
BUCKETS = 10
TEXT_CHARS = 300
CONSTRAINTS = 8  # shown of an experiment's hard constraints (each one short)


def report_command(expr: str | None, as_json: bool, plot: Path | None = None, page: Path | None = None) -> int:
    paths = resolve_experiment(expr)
    if plot is not None:
        from ar.plot import write_plot

        written = write_plot(paths, plot)  # first: a missing matplotlib fails before any output
    data = collect(paths)
    files = [f"plot: {written}"] if plot is not None else []
    if page is not None:
        from ar.html_report import write_html

        files.append(f"page: {write_html(paths, page, data)}")
    text = orjson.dumps(data).decode() if as_json else render(data)
    if files and not as_json:
        text += "\n\n" + "\n".join(files)
    print(text)
    return 0


def collect(paths: ExperimentPaths) -> dict:
    session = load_session(paths)
    state = load_state(paths)
    best = load_best(paths)
    direction = session.experiment.primary_direction
    kept, failures, last = deque(maxlen=KEPT), deque(maxlen=FAILURES), deque(maxlen=LAST)
    trend: list[dict | None] = [None] * BUCKETS  # the best as it stood at the end of each tenth
    total = max(state.runs, 1)
    running = None
    for index, row in enumerate(results_log.iter_rows(paths.results)):
        last.append(_brief(row))
        if row["verdict"] == "advance":
            kept.append(_brief(row))
            running = {"run_id": row["run_id"], "value": row["value"]}
        if row["status"] in FAILURE_STATUSES:
            failures.append(row)
        if running is not None:
            trend[min(index * BUCKETS // total, BUCKETS - 1)] = running
    experiment = session.experiment
    return {
        "expr": paths.slug,
        "goal": _short(experiment.goal),
        "primary": {"name": experiment.primary_metric, "direction": direction},
        "constraints": [_short(c)[:80] for c in experiment.constraints[:CONSTRAINTS]],
        "more_constraints": max(0, len(experiment.constraints) - CONSTRAINTS),
        "mutation_scope": _short(experiment.mutation_scope),
        "seconds": session.loop.seconds,
        "parent": experiment.parent_slug,
        "runs": state.runs,
        "counts": state.counts,
        "terminated_by": with_chain(terminated_by(session.limits(), state.counters(best_value(best))), *chain.budget(paths, session.loop)),
        "baseline": state.baseline,
        "best": {"run_id": best["run_id"], "value": best["value"]} if best else None,
        "checkpoint": _short(str(best["checkpoint"]))[:160] if best and best.get("checkpoint") else None,
        "kept_changes": list(kept),
        "failures": [_failure(paths, row) for row in failures],
        "trend": _changes(trend),
        "last_runs": list(last),
    }


def _changes(trend: list[dict | None]) -> list[dict]:
    """Each best once: the tenths in which it did not change add nothing."""
    shown: list[dict] = []
    for cell in trend:
        if cell is not None and (not shown or cell["run_id"] != shown[-1]["run_id"]):
            shown.append(cell)
    return shown


def _short(text: str) -> str:
    return clip(" ".join(text.split()), TEXT_CHARS)


def _brief(row: dict) -> dict:
    return {"run_id": row["run_id"], "verdict": row["verdict"], "value": row["value"], "note": _short(row["note"])[:120]}


def _failure(paths: ExperimentPaths, row: dict) -> dict:
    run = paths.run(row["run_id"])
    result = read_json_or_none(run.result) or {}
    error = log_tail(run.log, 1) if row["status"] == "crash" else []  # the exception line, where there is one
    return {**_brief(row), "status": row["status"], "reason": _short(str(result.get("reason") or ""))[:160],
            "error": _short(error[-1])[:160] if error else None}


def render(d: dict) -> str:
    p = d["primary"]
    counts = ", ".join(f"{v} {k}" for k, v in sorted(d["counts"].items(), key=lambda kv: -kv[1]))
    out = [
        f"# Report: {d['expr']}",
        f"Goal: {d['goal']}",
        f"Primary: {p['name']} ({p['direction']}); runs {d['runs']}" + (f" ({counts})" if counts else "")
        + f"; terminated: {d['terminated_by'] or 'no'}",
        "Constraints: " + (", ".join(d["constraints"]) + (f" (+{d['more_constraints']} more)" if d["more_constraints"] else "") or "none")
        + f"; {d['seconds']}s per run",
        f"Mutation scope: {d['mutation_scope'] or '-'}",
        *([f"Follows: {d['parent']}"] if d["parent"] else []),
        "",
        "## Baseline vs best",
    ]
    base, best = d["baseline"], d["best"]
    if best:
        change = ""
        if base and base["value"]:
            change = f" ({(best['value'] - base['value']) / abs(base['value']) * 100:+.1f}% vs baseline)"
        out.append(f"- baseline: {base['run_id']} {number(base['value'])}" if base else "- baseline: none")
        out.append(f"- best: {best['run_id']} {number(best['value'])}{change}")
        out.append(f"- best checkpoint: {d['checkpoint'] or 'none'}")
    else:
        out.append("- no valid run yet")
    out += ["", f"## Kept changes (last {KEPT})"]
    out += [f"- {r['run_id']} {number(r['value'])}: {r['note']}" for r in d["kept_changes"]] or ["- none"]
    out += ["", f"## Recent failures (last {FAILURES})"]
    out += [f"- {r['run_id']} {r['status']}: {r['reason'] or '?'}" + (f": {r['error']}" if r.get("error") else "") + f" ({r['note']})"
            for r in d["failures"]] or ["- none"]
    out += ["", f"## Trend of the best {p['name']} (as it stood after each tenth of the runs)"]
    out.append(" -> ".join(f"{c['run_id']} {number(c['value'])}" for c in d["trend"]) or "no scored runs")
    out += ["", f"## Last {LAST} runs"]
    out += [f"- {r['run_id']} {r['verdict']} {number(r['value'])}: {r['note']}" for r in d["last_runs"]] or ["- none"]
    return "\n".join(out)
