"""Bring an experiment back to consistency after `ar` was killed anywhere (SPEC §6).

Run by every command that finds the iteration lock free. Cheap when nothing is pending: it
looks only at the run after the last recorded one.
"""

from __future__ import annotations

from ar import results_log
from ar.best import promote_best
from ar.checkpoints import best_pointer, settle
from ar.durable import read_json, read_json_or_none, remove_temp_files
from ar.layout import ExperimentPaths, format_run_id, parse_run_id
from ar.record import apply_result
from ar.state import LoopState, after_run, rebuild_state, save_state, stored_state
from ar.wipe import finish_wipe


def repair(paths: ExperimentPaths) -> None:
    """Caller holds the iteration lock."""
    finish_wipe(paths)
    remove_temp_files(paths.dir)
    paths.active.unlink(missing_ok=True)
    if not paths.results.exists():
        results_log.create(paths.results)
    results_log.drop_partial_row(paths.results)
    state = _state_matching_results(paths)
    _restore_lost_rows(paths, state)
    _restore_lost_best(paths, state)
    pending = paths.run(format_run_id(state.last_run + 1))
    if not pending.dir.exists():
        settle(paths)  # a checkpoint swap left half done outside any run (a pending one finishes its own)
        return
    remove_temp_files(pending.dir)  # a kill mid-write of result.json leaves its temp file here
    if pending.result.exists():
        apply_result(paths, read_json(pending.result, f"delete {paths.relative(pending.result)} and run `ar status` again"))
        return
    # The run's owner died before judging it: end what is left of it and record it as a crash.
    from ar import launch
    from ar.iteration import finalize
    from ar.settings import load_session

    session = load_session(paths)
    started = pending.dir.stat().st_mtime
    reason = "ar was killed before the run was judged; recorded by repair"
    finalize(paths, session, pending, launch.abandoned_outcome(pending), started, session.loop.seconds, reason)


def _state_matching_results(paths: ExperimentPaths) -> LoopState:
    state = stored_state(paths)
    last = results_log.tail_rows(paths.results, 1)
    last_run = parse_run_id(last[0]["run_id"]) if last else 0
    if state is not None and last_run == state.last_run + 1:
        row = last[0]  # killed between appending the row and saving the counters
        state = after_run(state, row["run_id"], row["status"], row["verdict"], row["value"])
        save_state(paths, state)
    elif state is None or last_run > state.last_run:
        state = rebuild_state(paths)  # lost, damaged or stale: derive it again from results.tsv
        save_state(paths, state)
    return state


def _restore_lost_rows(paths: ExperimentPaths, state: LoopState) -> None:
    """Rows the counters include but results.tsv lost (a torn last row, cut by drop_partial_row):
    appended again from their result.json. Nothing to do in the normal case."""
    last = results_log.tail_rows(paths.results, 1)
    for number in range((parse_run_id(last[0]["run_id"]) if last else 0) + 1, state.last_run + 1):
        result = read_json_or_none(paths.run(format_run_id(number)).result)
        if isinstance(result, dict):
            results_log.append_row(paths.results, result)


def _restore_lost_best(paths: ExperimentPaths, state: LoopState) -> None:
    """best.json deleted (the fix its load error names) although runs advanced: point it again at the
    last run that advanced, so the next run is not judged against no best at all."""
    if paths.best.exists() or not state.counts.get("advance"):
        return
    best_id = None
    for row in results_log.iter_rows(paths.results):
        if row["verdict"] == "advance":
            best_id = row["run_id"]
    result = read_json_or_none(paths.run(best_id).result) if best_id else None
    if isinstance(result, dict) and result.get("verdict") == "advance":
        promote_best(paths, result, best_pointer(paths, best_id))
