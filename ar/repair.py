"""Bring an experiment back to consistency after `ar` was killed anywhere (SPEC §6).

Run by every command that finds the iteration lock free. Cheap when nothing is pending: it
looks only at the run after the last recorded one.
"""

from __future__ import annotations

from datetime import datetime, timezone

from ar import results_log
from ar.durable import read_json, read_json_or_none, remove_temp_files
from ar.layout import ExperimentPaths, format_run_id, parse_run_id
from ar.record import apply_result
from ar.state import LoopState, after_run, load_state, rebuild_state, save_state


def repair(paths: ExperimentPaths) -> None:
    """Caller holds the iteration lock."""
    remove_temp_files(paths.dir)
    paths.active.unlink(missing_ok=True)
    if not paths.results.exists():
        results_log.create(paths.results)
    results_log.drop_partial_row(paths.results)
    state = _state_matching_results(paths)
    pending = paths.run(format_run_id(state.last_run + 1))
    if not pending.dir.exists():
        return
    if pending.result.exists():
        apply_result(paths, read_json(pending.result, f"delete {paths.relative(pending.result)} and run `ar status` again"))
        return
    # The run's owner died before judging it: end what is left of it and record it as a crash.
    from ar import launch
    from ar.iteration import TIME_FORMAT, finalize
    from ar.settings import load_session

    session = load_session(paths)
    started = datetime.fromtimestamp(pending.dir.stat().st_mtime, timezone.utc)
    reason = "ar was killed before the run was judged; recorded by repair"
    finalize(paths, session, pending, launch.abandoned_outcome(pending), started.strftime(TIME_FORMAT), session.loop.seconds, reason)


def _state_matching_results(paths: ExperimentPaths) -> LoopState:
    if read_json_or_none(paths.state) is None:
        save_state(paths, rebuild_state(paths))  # lost or damaged: derive it again from results.tsv
    state = load_state(paths)
    last = results_log.tail_rows(paths.results, 1)
    if last and parse_run_id(last[0]["run_id"]) > state.last_run:
        row = last[0]  # killed between appending the row and saving the counters
        state = after_run(state, row["run_id"], row["status"], row["verdict"], row["value"])
        save_state(paths, state)
    return state
