"""Judging a finished run (SPEC §5.1-5.3): its metrics, constraints and verdict, written to
result.json first (the journal), then applied: best promotion or train.py restore, results row,
counters. `ar run` calls it after the watchdog; repair calls it for a run whose supervisor died.
"""

from __future__ import annotations

import math
import signal

from ar import chain, launch
from ar.best import best_value, load_best, restore_source
from ar.checkpoints import find_checkpoint
from ar.constraints import check_constraints
from ar.durable import read_json_or_none, write_json_atomic
from ar.faults import crash_point
from ar.layout import ExperimentPaths, RunPaths, format_run_id, run_number
from ar.metrics import extract_metrics
from ar.record import apply_result
from ar.runnote import read_run_note
from ar.settings import Session
from ar.state import after_run, load_state
from ar.termination import progress, terminated_by, with_chain
from ar.text import printable, utc_time
from ar.noise import judge_series, min_gain
from ar.verdict import decide, gain, noise_floor

METRICS_IN_RESULT = 24  # keeps result.json small however chatty the log is
MEASURED = ("wall_seconds", "peak_rss_mb", "peak_gpu_mb")


def finalize(
    paths: ExperimentPaths, session: Session, run: RunPaths, outcome, started: float, seconds: int, reason: str | None = None
) -> dict:
    """Judge the run and record it. result.json is written first: it is the journal entry from which
    `apply_result` (and, after a kill, `repair`) redoes the effects idempotently."""
    experiment = session.experiment
    loop = session.loop
    extraction = extract_metrics(experiment, paths, run, started, launch.project_python())
    metrics = {**extraction.metrics, **measured_metrics(outcome)}
    primary = metrics.get(experiment.primary_metric)
    checked = check_constraints(experiment.parsed_constraints(), metrics)
    best = load_best(paths)
    previous = {"run_id": best["run_id"], "value": best["value"]} if best else None
    hold = all(c["passed"] for c in checked)
    unmeasured = any(c["value"] is None for c in checked)
    group = read_group(run)
    noise = best.get("noise") if best else None
    min_delta = min_gain(loop.min_delta, loop.noise_k, noise["sigma"] if noise else None)
    simpler = loop.prefer_simpler and best is not None and _smaller(run, restore_source(paths, best))
    decision = decide(outcome.status, primary, best_value(best), experiment.primary_direction, hold, min_delta,
                      loop.min_rel_delta, unmeasured, simpler)
    earlier = group_values(paths, group, run) if group is not None else []
    series = judge_series(decision, group, earlier, primary, best_value(best), experiment.primary_direction, min_delta,
                          loop.min_rel_delta, loop.confirm, noise, run.run_id)
    decision, group, values, noise, series_reason = series
    state = after_run(load_state(paths), run.run_id, decision.status, decision.verdict, primary)
    advanced = decision.verdict == "advance"
    best_after = {"run_id": run.run_id, "value": sum(values) / len(values), "n": len(values), "noise": noise} if advanced else previous
    counters = state.counters(best_after["value"] if best_after else None)
    chain_mode, chain_remaining = chain.budget(paths, loop)
    stop = with_chain(terminated_by(session.limits(), counters), chain_mode, chain_remaining)
    result = {
        "run_id": run.run_id,
        "started_at": utc_time(started),
        "wall_seconds": round(outcome.wall_seconds, 3),
        "seconds": seconds,
        "status": decision.status,
        "verdict": decision.verdict,
        "valid": decision.valid,
        "improved_over_best": decision.improved,
        "primary": {"name": experiment.primary_metric, "direction": experiment.primary_direction, "value": primary},
        "previous_best": previous,
        "best": best_after,
        "metrics": _capped_metrics(metrics, [experiment.primary_metric, *(c["name"] for c in checked), *MEASURED]),
        "metric_source": extraction.source,
        "constraints": checked,
        "reason": _printable(reason or series_reason or failure_reason(outcome, decision, session, primary, previous, checked, extraction, min_delta)),
        "note": read_run_note(file_text(run.train_py)) + _series_mark(group),
        "diff": diff_against(paths, best, run),
        "group": group,
        "exit_code": outcome.exit_code,
        "train_py": "kept" if advanced else f"restored from {best['run_id']}" if best else "restored from baseline (as set up for r0001)",
        "should_terminate": stop is not None,
        "terminated_by": stop,
        "progress": progress(session.limits(), counters),
        "chain_remaining": chain_remaining,
        "log_path": paths.relative(run.log),
        "checkpoint": find_checkpoint(paths, experiment, run, started),  # promoted on advance, else deleted
    }
    result["job_id"] = None
    if run.job.exists():
        from ar.backends.run_job import recorded_job

        result["job_id"] = (recorded_job(run) or {}).get("job_id")  # the Slurm job that ran it, for sacct and the cluster's logs
    if outcome.status == "unclean":
        write_json_atomic(paths.unclean, {"run_id": run.run_id, "pids": outcome.survivors})
    write_json_atomic(run.result, result)
    crash_point("after_result")
    apply_result(paths, result)
    return result


def _series_mark(group: dict | None) -> str:
    if group is None:
        return ""
    if group["kind"] == "repeat":
        return f" [repeat {group['index']}/{group['size']}]"
    return " [candidate]" if group["index"] == 1 else f" [confirm {group['index'] - 1}/{group['size'] - 1} of {group['of']}]"


def read_group(run: RunPaths) -> dict | None:
    """The run's place in a series (baseline repeats, or a candidate's confirmations), written before it
    launched; None for most runs."""
    group = read_json_or_none(run.group)
    return group if isinstance(group, dict) and {"kind", "of", "index", "size"} <= group.keys() else None


def group_values(paths: ExperimentPaths, group: dict, run: RunPaths) -> list[float]:
    """The valid values of the series' earlier runs (the baseline and the repeats before this one)."""
    values = []
    for number in range(run_number(group["of"]), run_number(run.run_id)):
        result = read_json_or_none(paths.run(format_run_id(number)).result)
        if isinstance(result, dict) and result.get("valid") and (result.get("group") or {}).get("of", result.get("run_id")) == group["of"]:
            values.append(result["primary"]["value"])
    return values


def diff_against(paths: ExperimentPaths, best: dict | None, run: RunPaths) -> str:
    """`+a -b`: the run's train.py against the one it started from (the best's, or the baseline's)."""
    from ar.diffsize import diff_size, shown

    return shown(diff_size(file_text(restore_source(paths, best)), file_text(run.train_py)))


def _smaller(run: RunPaths, best_train_py) -> bool:
    from ar.diffsize import code_lines

    return code_lines(file_text(run.train_py)) < code_lines(file_text(best_train_py))


def _printable(text: str | None) -> str | None:
    return None if text is None else printable(text)


def exit_reason(code: int | None) -> str:
    if code is None:
        return "ended without an exit status"
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else f"signal {-code}"
        return f"killed by {name}" + (" (out of memory?)" if code == -signal.SIGKILL else "")
    return f"exited with code {code}"


def measured_metrics(outcome) -> dict[str, float]:
    """What ar measures of every run itself, so constraints can name them."""
    measured = {"wall_seconds": round(outcome.wall_seconds, 3), "peak_rss_mb": round(outcome.peak_rss_mb, 1)}
    if outcome.peak_gpu_mb is not None:
        measured["peak_gpu_mb"] = round(outcome.peak_gpu_mb, 1)
    return measured


def failure_reason(outcome, decision, session: Session, primary, previous: dict | None, checked: list[dict], extraction,
                   min_delta: float) -> str | None:
    """Why the run did not advance, in one line (None when it did; for a simpler train.py, why it did)."""
    status, metric = decision.status, session.experiment.primary_metric
    if status == "unclean":
        return f"processes survived SIGKILL: {' '.join(map(str, outcome.survivors[:8]))}"
    if status == "crash":
        return exit_reason(outcome.exit_code)
    if status == "timeout":
        return "killed at the time limit"
    if status == "interrupted":
        return "stopped by the user"
    if status == "invalid":
        missing = [c["name"] for c in checked if c["value"] is None]
        if missing and primary is not None and math.isfinite(primary):
            return (f"constraint metric {', '.join(missing)} never appeared (ar measures {', '.join(MEASURED)}; "
                    "any other name must come from the training's metrics)")
        if primary is not None:
            return f"{metric} is {primary} (not finite)"
        where = f"by the {extraction.source} backend" if extraction.source != "log" else "in the run's output"
        return f"{metric} not found {where}" + (f" ({extraction.problem})" if extraction.problem else "")
    failed = [f"{c['name']}{c['op']}{c['threshold']:g} failed ({c['value']})" for c in checked if not c["passed"]]
    if decision.verdict == "advance" and not decision.improved and previous is not None:
        return "simpler at equal metric"
    if failed or decision.verdict == "advance" or previous is None:
        return "; ".join(failed) or None
    loop, direction = session.loop, session.experiment.primary_direction
    gained = gain(primary, previous["value"], direction)
    if gained > 0:
        floor = noise_floor(previous["value"], min_delta, loop.min_rel_delta)
        return f"gain {gained:.4g} is within the noise floor {floor:.4g}"
    return None


def _capped_metrics(metrics: dict[str, float], first: list[str]) -> dict[str, float]:
    ordered = [n for n in first if n in metrics] + [n for n in metrics if n not in first]
    return {name: metrics[name] for name in ordered[:METRICS_IN_RESULT]}


def file_text(path) -> str:
    """The file's text, "" when it is gone (a run's snapshot removed by hand)."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
