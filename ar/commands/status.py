"""`ar status`: where the experiment stands, in at most 10 lines (or --last N runs, or JSON).

Reads only small files (settings, counters, best, the tail of results.tsv), so its cost does
not grow with the number of runs.
"""

from __future__ import annotations

import orjson

from ar import chain, lines, results_log
from ar.best import best_value, load_best, train_py_in_sync
from ar.experiments import resolve_experiment
from ar.repair import repair
from ar.layout import ExperimentPaths
from ar.slots import books, in_flight, needs_adoption, queued
from ar.text import clip
from ar.settings import DEFAULT_RUNNER, load_session
from ar.state import load_state
from ar.termination import progress, terminated_by, with_chain
from ar.time_limit import run_seconds

MAX_LAST = 50
BEST_LINE_CHARS = 100  # the best line names the checkpoint only when it stays this short
NOTE_CHARS = 80


def status_command(expr: str | None, compact: bool, last: int, as_json: bool) -> int:
    paths = resolve_experiment(expr)
    if needs_adoption(paths):
        from ar.iteration import adopt

        adopt(paths, load_session(paths))  # a Slurm job whose supervisor died is followed again
    with books(paths):
        repair(paths)  # cheap when nothing is pending
        running = [record or {"run_id": "a run"} for _, record in in_flight(paths)]
        waiting = queued(paths)
    data = collect(paths, running, waiting, min(max(last, 0), MAX_LAST))
    if as_json:
        print(orjson.dumps(data).decode())
        return 0
    out = []
    if compact or not last:
        out += compact_lines(data)
    out += [run_line(row) for row in data["last_runs"]]
    print("\n".join(out))
    return 0


def collect(paths: ExperimentPaths, running: list[dict], waiting: list[str], last: int) -> dict:
    session = load_session(paths)
    state = load_state(paths)
    best = load_best(paths)
    counters = state.counters(best_value(best))
    limits = session.limits()
    chain_mode, chain_remaining = chain.budget(paths, session.loop)
    return {
        "expr": paths.slug,
        "primary": {"name": session.experiment.primary_metric, "direction": session.experiment.primary_direction},
        "seconds": run_seconds(paths, session),
        "seconds_auto": session.loop.seconds_auto,
        "runner": session.experiment.runner,
        "entry": {"pattern": session.experiment.entry_pattern, "entry": session.experiment.entry} if session.experiment.entry else None,
        "noise": {"min_delta": session.loop.min_delta, "min_rel_delta": session.loop.min_rel_delta, "noise_k": session.loop.noise_k,
                  **((best or {}).get("noise") or {})},
        "best": {"run_id": best["run_id"], "value": best["value"], "checkpoint": _checkpoint(paths, best)} if best else None,
        "baseline": state.baseline,
        "runs": state.runs,
        "counts": state.counts,
        "progress": progress(limits, counters),
        "terminated_by": with_chain(terminated_by(limits, counters), chain_mode, chain_remaining),
        "train_py_in_sync": train_py_in_sync(paths, best),
        "running": running[0] if running else None,
        "in_flight": [record["run_id"] for record in running],
        "queued": waiting,
        "slots": session.loop.slots,
        "backend": session.loop.backend,
        "unclean": paths.unclean.exists(),
        "chain_mode": chain_mode,
        "chain_remaining": chain_remaining,
        "parent": session.experiment.parent_slug,
        # a chain child's next skill entry: the skill treats it like AR_NONINTERACTIVE=1
        "noninteractive": chain.noninteractive(paths),
        "last_runs": results_log.tail_rows(paths.results, last),
    }


def _checkpoint(paths: ExperimentPaths, best: dict) -> str | None:
    """best.json's checkpoint (relative to the experiment directory) as a path from the project root."""
    return paths.relative(paths.dir / best["checkpoint"]) if best.get("checkpoint") else None


RUNNER_CHARS = 100


def compact_lines(d: dict) -> list[str]:
    p = d["primary"]
    noise = d["noise"]
    sigma = noise.get("sigma")
    floor = " or ".join(
        text for text, on in ((f"{noise['min_delta']:g}", noise["min_delta"]), (f"{noise['min_rel_delta']:.2%}", noise["min_rel_delta"]),
                              (f"{noise.get('noise_k', 2):g}x sigma {sigma:.3g} (n {noise.get('n')})" if sigma else "", sigma)) if on
    )
    auto = " (auto: 2x the baseline)" if d.get("seconds_auto") else ""
    out = [f"expr {d['expr']}: {p['direction']} {p['name']}, {d['seconds']}s/run{auto}" + (f", min gain {floor}" if floor else "")]
    launch = [f"drives {d['entry']['entry']} ({d['entry']['pattern']})"] if d["entry"] else []
    if d["runner"] != DEFAULT_RUNNER:
        launch.append(f"runner {clip(d['runner'], RUNNER_CHARS)}")
    if launch:
        out.append(", ".join(launch))
    best, base = d["best"], d["baseline"]
    if best:
        baseline = f" (baseline {lines.number(base['value'])} {base['run_id']})" if base and base["run_id"] != best["run_id"] else ""
        line = f"best {lines.number(best['value'])} {best['run_id']}{baseline}"
        with_ckpt = f"{line}, checkpoint {best['checkpoint']}"
        out.append(with_ckpt if best["checkpoint"] and len(with_ckpt) <= BEST_LINE_CHARS else line)
    else:
        out.append("best none yet: the first valid run sets it")
    counts = ", ".join(f"{v} {k}" for k, v in sorted(d["counts"].items(), key=lambda kv: -kv[1]))
    out.append(f"runs {d['runs']}" + (f": {counts}" if counts else ""))
    out.append(f"progress {d['progress']}")
    source = f"best {best['run_id']}" if best else "the baseline"
    out.append(f"train.py {'in sync with' if d['train_py_in_sync'] else 'differs from'} {source}")
    if d["slots"] > 1 or d["backend"] != "local":
        waiting = f", {len(d['queued'])} queued" if d["queued"] else ""
        out.append(f"running {' '.join(d['in_flight']) or 'none'} ({len(d['in_flight'])}/{d['slots']} slots, {d['backend']}){waiting}")
    elif d["running"]:
        out.append(f"running {d['running']['run_id']} since {d['running'].get('started_at', '?')}")
    if d["terminated_by"]:
        out.append(f"TERMINATED by {d['terminated_by']}")
    if d["unclean"]:
        out.append("UNCLEAN: processes of a run survived SIGKILL; see .ar-unclean")
    if d["chain_mode"] != "disabled" or d["noninteractive"]:
        left = f": {d['chain_remaining']} remaining" if d["chain_mode"] == "max_n" else ""
        mark = "; next entry non-interactive" if d["noninteractive"] else ""
        out.append(f"chain {d['chain_mode']}{left}{mark}")
    return out


def run_line(row: dict) -> str:
    note = clip(row.get("note", ""), NOTE_CHARS)
    return f"{row['run_id']} {row['verdict']} {lines.number(row['value'])} {note}".rstrip()
