"""One iteration of the loop, `ar run`, top to bottom (SPEC §5).

lock -> reconcile -> preflight -> snapshot -> detach -> launch and watch -> finalize
(extract, decide, write the result, promote or restore, log, termination).
"""

from __future__ import annotations

import errno
import math
import os
import shutil
import signal
import time

from ar import chain, launch, lines, outcome_record, supervisor
from ar.active import busy_error, record_owner
from ar.best import best_value, load_best, train_py_problem
from ar.checkpoints import find_checkpoint
from ar.constraints import check_constraints
from ar.durable import read_json, sha256_file, write_bytes_atomic, write_json_atomic
from ar.errors import EXIT_ERROR, EXIT_TERMINATED, EXIT_UNCLEAN, ArError, as_typed
from ar.metrics import extract_metrics
from ar.faults import crash_point
from ar.layout import ExperimentPaths, RunPaths, format_run_id
from ar.lock import IterationLock
from ar.runnote import read_run_note
from ar.seal import check_seal
from ar.settings import Session, load_session
from ar.record import apply_result
from ar.repair import repair
from ar.state import after_run, load_state
from ar.termination import progress, terminated_by, with_chain
from ar.text import printable
from ar.verdict import decide, gain, noise_floor

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
METRICS_IN_RESULT = 24  # keeps result.json small however chatty the log is
MEASURED = ("wall_seconds", "peak_rss_mb", "peak_gpu_mb")


def run_iteration(paths: ExperimentPaths, seconds: int | None, wait: float | None, knobs: tuple | None = None) -> int:
    lock = IterationLock(paths.lock)
    if not lock.try_acquire():
        raise busy_error(paths)
    repair(paths)
    session = load_session(paths)
    preflight(paths, session)
    if knobs is not None:
        set_knobs(paths, *knobs)
    budget = seconds or session.loop.seconds
    run = start_run(paths)
    chain.consume_reentry(paths)  # a chain child's first run: the non-interactive re-entry is over
    crash_point("after_snapshot")
    channel = supervisor.detach(lock, paths.supervisor_log)  # from here on, two processes
    if channel.is_caller:
        return channel.follow(run.run_id, wait)
    supervisor.run_supervised(lambda: own_run(paths, session, run, budget, channel), channel)
    raise AssertionError("unreachable: the supervisor exits")


def own_run(paths: ExperimentPaths, session: Session, run: RunPaths, budget: int, channel) -> int:
    """The supervisor's part: launch and watch, then judge and record."""
    started = time.time()

    def launched(pid: int) -> None:  # runs while the training starts up, off its critical path
        record_owner(paths, run.run_id, pid=os.getpid(), started_at=utc_time(started), seconds=budget)
        channel.line(lines.launched(run.run_id, budget, read_run_note(_text(run.train_py)), session.loop.seconds))
        crash_point("after_spawn")

    outcome = launch.watch(paths, session, run, budget, launched)
    try:
        outcome_record.save(run, outcome, started, budget)  # from here on the run is judged, whatever happens
        crash_point("after_watch")
        result = finalize(paths, session, run, outcome, started, budget)
    except OSError as exc:
        if exc.errno not in DISK_FULL:
            raise
        channel.line(disk_full_line(paths, run, exc))
        return EXIT_ERROR
    paths.active.unlink(missing_ok=True)
    for line in lines.finished(paths, result):
        channel.line(line)
    return lines.exit_code(result)


def preflight(paths: ExperimentPaths, session: Session) -> None:
    """Refuse a run the loop must not make: processes left over, frozen files edited, loop over."""
    check_unclean(paths)
    check_train_py(paths)
    check_seal(paths)
    for name, digest in session.experiment.protected.items():
        path = paths.dir / name
        if not path.exists() or sha256_file(path) != digest:
            raise ArError(
                f"{name} changed since `ar init` (only train.py may change between runs)",
                f"restore {paths.relative(path)} to its original content, or start a new experiment with `ar init`",
            )
    stop = terminated_by(session.limits(), load_state(paths).counters(best_value(load_best(paths))))
    stop = with_chain(stop, *chain.budget(paths, session.loop))
    if stop:
        raise ArError(
            f"experiment '{paths.slug}' has terminated ({stop})",
            _TERMINATED_HINTS.get(stop, "the loop is over: stop and report the best (`ar report`)"),
            EXIT_TERMINATED,
        )


# The agent reads these: they end the loop; changing limits is the user's decision, never invited.
_TERMINATED_HINTS = {
    "manual": "the user interrupted it: stop the loop; only the user resumes it",
    "consecutive_failures": "the environment keeps failing (see `ar tail`): stop the loop and tell the user",
    "chain_budget": "the chain is complete: stop the loop and report the best (`ar report`)",
}


def check_train_py(paths: ExperimentPaths) -> None:
    """Only a regular file of sane size is snapshotted (a symlink to /dev/zero would fill the disk)."""
    problem = train_py_problem(paths.train_py)
    if problem is None:
        return
    fix = ("keep data and weights out of train.py: load them from files" if "MiB" in problem
           else "put the training script back as a regular file; `ar session --resume revert-best` restores the best one")
    raise ArError(f"{paths.relative(paths.train_py)} {problem}", fix)


def set_knobs(paths: ExperimentPaths, settings: dict, note: str | None) -> None:
    """`--set` / `--note`: train.py rewritten before its snapshot (under the lock, after repair)."""
    from ar.knobs import apply_settings

    source = paths.train_py.read_text(encoding="utf-8")
    changed = apply_settings(source, settings, note)
    if changed != source:
        write_bytes_atomic(paths.train_py, changed.encode())


def check_unclean(paths: ExperimentPaths) -> None:
    if not paths.unclean.exists():
        return
    from ar.watchdog import still_alive

    record = read_json(paths.unclean, f"delete {paths.relative(paths.unclean)} once no process of the run is left")
    alive = still_alive([pid for pid in record.get("pids", []) if isinstance(pid, int)])
    if not alive:
        paths.unclean.unlink()  # the survivors have gone: the GPU is free again
        return
    raise ArError(
        f"processes of {record.get('run_id')} survived SIGKILL (pids {' '.join(map(str, alive[:8]))})",
        f"end them (they may hold GPU memory), then delete {paths.relative(paths.unclean)}",
        EXIT_UNCLEAN,
    )


def start_run(paths: ExperimentPaths) -> RunPaths:
    number = load_state(paths).last_run + 1
    while paths.run(format_run_id(number)).dir.exists():  # never reuse an id, whatever state says
        number += 1
    run = paths.run(format_run_id(number))
    record_owner(paths, run.run_id)  # before the run exists: a run directory always has an owner on record
    paths.runs.mkdir(exist_ok=True)
    run.dir.mkdir()
    try:
        shutil.copyfile(paths.train_py, run.train_py)
        if number == 1:
            # The baseline is what the user set up for the first run, not the scaffold it replaced:
            # without a best, a failed run restores this, never a template.
            write_bytes_atomic(paths.baseline_py, run.train_py.read_bytes())
        run.ckpt_dir.mkdir()  # $AR_CKPT_DIR exists from the start: train.py saves into it without a mkdir
        outcome_record.reserve(run)
    except OSError as exc:
        shutil.rmtree(run.dir, ignore_errors=True)  # never started: no run to record
        if exc.errno not in DISK_FULL:
            raise
        raise ArError(f"disk full: cannot start {run.run_id} in {paths.relative(run.dir)} (on {mount_point(paths.dir)})",
                      "free space there, then run again") from None
    return run


DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def mount_point(path) -> str:
    """The mount point of the filesystem holding path: where space must be freed."""
    path = os.path.realpath(path)
    device = os.stat(path).st_dev
    while path != "/" and os.stat(os.path.dirname(path)).st_dev == device:
        path = os.path.dirname(path)
    return path


def disk_full_line(paths: ExperimentPaths, run: RunPaths, exc: OSError) -> str:
    where = f"{exc.filename or paths.relative(run.dir)} (on {mount_point(paths.dir)})"
    if run.result.exists():
        return as_typed(f"ar: disk full after {run.run_id}'s result was written, at {where} "
                        f"(fix: free space there, then `ar status` finishes recording it)")
    return as_typed(f"ar: disk full writing {where}; {run.run_id} finished and its outcome is kept "
                    f"(fix: free space there, then `ar status` judges it on its log)")


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
    decision = decide(outcome.status, primary, best_value(best), experiment.primary_direction, hold, loop.min_delta,
                      loop.min_rel_delta, unmeasured)
    state = after_run(load_state(paths), run.run_id, decision.status, decision.verdict, primary)
    advanced = decision.verdict == "advance"
    best_after = {"run_id": run.run_id, "value": primary} if advanced else previous
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
        "reason": _printable(reason or failure_reason(outcome, decision, session, primary, previous, checked, extraction)),
        "note": read_run_note(_text(run.train_py)),
        "exit_code": outcome.exit_code,
        "train_py": "kept" if advanced else f"restored from {best['run_id']}" if best else "restored from baseline (as set up for r0001)",
        "should_terminate": stop is not None,
        "terminated_by": stop,
        "progress": progress(session.limits(), counters),
        "chain_remaining": chain_remaining,
        "log_path": paths.relative(run.log),
        "checkpoint": find_checkpoint(paths, experiment, run, started),  # promoted on advance, else deleted
    }
    if outcome.status == "unclean":
        write_json_atomic(paths.unclean, {"run_id": run.run_id, "pids": outcome.survivors})
    write_json_atomic(run.result, result)
    crash_point("after_result")
    apply_result(paths, result)
    return result


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


def failure_reason(outcome, decision, session: Session, primary, previous: dict | None, checked: list[dict], extraction) -> str | None:
    """Why the run did not advance, in one line (None when it did)."""
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
    if failed or decision.verdict == "advance" or previous is None:
        return "; ".join(failed) or None
    loop, direction = session.loop, session.experiment.primary_direction
    gained = gain(primary, previous["value"], direction)
    if gained > 0:
        floor = noise_floor(previous["value"], loop.min_delta, loop.min_rel_delta)
        return f"gain {gained:.4g} is within the noise floor {floor:.4g}"
    return None


def utc_time(epoch: float | None = None) -> str:
    return time.strftime(TIME_FORMAT, time.gmtime(epoch))


def _capped_metrics(metrics: dict[str, float], first: list[str]) -> dict[str, float]:
    ordered = [n for n in first if n in metrics] + [n for n in metrics if n not in first]
    return {name: metrics[name] for name in ordered[:METRICS_IN_RESULT]}


def _text(path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
