"""Bring an experiment back to consistency after `ar` was killed anywhere (SPEC §6).

Run under the books lock by every command that reads or writes them. Cheap when nothing is
pending: a flock try per slot, a stat and the last line of results.tsv against the counters,
then a look for the run after the highest recorded one.
"""

from __future__ import annotations

import os
import sys
import time

from ar import results_log
from ar.active import active_run, recorded_slots
from ar.best import promote_best
from ar.checkpoints import best_pointer, settle
from ar.durable import read_json, read_json_or_none, remove_temp_files, write_bytes_atomic
from ar.layout import ExperimentPaths, format_run_id, run_number
from ar.record import apply_result
from ar.slots import queued, slot_busy
from ar.state import LoopState, after_run, load_state, rebuild_state, results_size, save_state, stored_state
from ar.wipe import finish_wipe


def repair(paths: ExperimentPaths) -> list[tuple[int, dict]]:
    """Caller holds the books lock. Runs whose supervisor lives (their slot is held) are left alone;
    a run whose supervisor died is finished here: judged on its saved outcome, or recorded a crash.
    Returns (slot, record) of Slurm jobs still running whose supervisor died: they keep their
    record (and so their slot) until `ar.iteration.adopt` gives them a new supervisor."""
    live, orphans = set(), []
    for index in recorded_slots(paths):
        record = active_run(paths, index)
        if slot_busy(paths, index):
            live.add(record["run_id"] if record else None)
        elif record is not None:
            orphans.append((index, record))
        else:
            paths.slot_record(index).unlink(missing_ok=True)  # damaged, or no run of its own (a smoke check)
    finish_wipe(paths)
    if not live:
        remove_temp_files(paths.dir)  # a live supervisor may be writing its record's temp file
    if paths.results.exists():
        results_log.drop_partial_row(paths.results)
    state = _state_matching_results(paths)
    _restore_lost_best(paths, state)
    finished, running_jobs = set(), []
    for index, record in orphans:
        run_id = record["run_id"]
        if run_number(run_id) is not None and paths.run(run_id).dir.is_dir():
            finished.add(run_id)
            if not _finish_pending(paths, paths.run(run_id)):
                running_jobs.append((index, record))
                continue
        # Only once recorded: a kill before leaves the record, and the next repair finishes the run.
        paths.slot_record(index).unlink(missing_ok=True)
    # Run directories past the highest recorded run that no live slot or the queue holds: a run
    # of an older version, or one made by hand.
    waiting = set(queued(paths))
    number = load_state(paths).highest + 1
    while (pending := paths.run(format_run_id(number))).dir.exists():
        if pending.run_id not in live | waiting | finished:
            _finish_pending(paths, pending)  # (a Slurm job of an older version still running: left as it is)
            finished.add(pending.run_id)
        number += 1
    if not finished:
        settle(paths)  # a checkpoint swap left half done outside any run (a pending one finishes its own)
    return running_jobs


def _finish_pending(paths: ExperimentPaths, pending) -> bool:
    """Record a run its supervisor left unrecorded, whatever point it died at; False for a Slurm
    job that still runs (it is not over: it needs a new supervisor, not a verdict)."""
    remove_temp_files(pending.dir)  # a kill mid-write of result.json leaves its temp file here
    if pending.result.exists():
        apply_result(paths, read_json(pending.result, f"delete {paths.relative(pending.result)} and run `ar status` again"))
        return True
    if not pending.train_py.exists():
        _set_aside_stray(paths, pending)
        return True
    from ar import launch, outcome_record
    from ar.judge import finalize
    from ar.settings import load_session

    session = load_session(paths)
    saved = outcome_record.load(pending)
    if saved is None and pending.job.exists():  # a Slurm job outlives its supervisor
        from ar.backends.run_job import ended_job

        saved = ended_job(paths, session, pending)
        if saved is None:
            return False
    if saved is not None:  # the training ended; judging it did not (a full disk, a kill): judge it now
        finalize(paths, session, pending, *saved)
        return True
    # The run's owner died before the training ended: end what is left of it and record a crash.
    started = pending.dir.stat().st_mtime
    reason = "ar was killed before the run was judged; recorded by repair"
    finalize(paths, session, pending, launch.abandoned_outcome(pending), started, session.loop.seconds, reason)
    return True


def _state_matching_results(paths: ExperimentPaths) -> LoopState:
    state = stored_state(paths)
    size = results_size(paths)
    last = results_log.tail_lines(paths.results, 1)
    last_run = run_number(last[0].split("\t", 1)[0]) if last else 0
    if state is not None and state.results_bytes == size and last_run == state.last_run:
        return state  # the usual case: a stat and the log's last line agree with the counters
    if state is not None and state.results_bytes is not None and last and size == state.results_bytes + len(last[0].encode()) + 1:
        row = results_log.parse_row(last[0])
        if run_number(row["run_id"]) not in (None, state.last_run):
            # killed between appending the row and saving the counters
            state = after_run(state, row["run_id"], row["status"], row["verdict"], row["value"])
            save_state(paths, state)
            return state
    return _rebuild_from_runs(paths, state)


def _rebuild_from_runs(paths: ExperimentPaths, stored: LoopState | None) -> LoopState:
    """results.tsv no longer matches the counters: lost counters, or a log edited by hand (a
    garbage line, a row deleted, counters ahead of the rows). The runs' result.json files are
    the journal: the log is rebuilt from them, and a log that differed is set aside, named."""
    kept: dict[int, str] = {}  # parseable rows of runs without a result.json stay as they are
    for line in results_log.data_lines(paths.results):
        number = run_number(line.split("\t", 1)[0])
        if number is not None:
            kept[number] = line
    results = {}
    if paths.runs.is_dir():
        for entry in os.scandir(paths.runs):
            number = run_number(entry.name)
            result = read_json_or_none(paths.run(entry.name).result) if number is not None else None
            if isinstance(result, dict) and result.get("run_id") == entry.name:
                results[number] = result
    # A lost log (and counters) leaves only the journal; otherwise a result.json past the log's
    # last row is a pending run, judged by the pending path below, not here.
    last = max(kept, default=0) or (max(results, default=0) if stored is None else 0)
    if stored is not None and stored.last_run in results:
        last = max(last, stored.last_run)  # a damaged last row: the counters know the run was recorded
    rows = [results_log.format_row(results[n]) if n in results else kept[n] for n in sorted({*kept, *results}) if n <= last]
    text = "\n".join([results_log.HEADER, *rows]) + "\n"
    name = paths.relative(paths.results)
    if not paths.results.exists():
        write_bytes_atomic(paths.results, text.encode())
        if rows:
            print(f"ar: {name} was missing; rebuilt it from the runs' result.json", file=sys.stderr)
    elif paths.results.read_bytes() != text.encode():
        aside = paths.results.with_name(f"{paths.results.name}.damaged-{_stamp()}")
        os.rename(paths.results, aside)
        write_bytes_atomic(paths.results, text.encode())
        print(f"ar: {name} did not match the runs' result.json; rebuilt it from them "
              f"(the old one is {paths.relative(aside)})", file=sys.stderr)
    state = rebuild_state(paths)._replace(manual_stop=bool(stored and stored.manual_stop))
    save_state(paths, state)
    return state


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


def _set_aside_stray(paths: ExperimentPaths, pending) -> None:
    """A run directory no run made (no train.py snapshot: created by hand, or a kill before the
    snapshot): not a run that died, so nothing is judged or restored; its id is freed."""
    if pending.process_log.exists():  # it did launch: whatever of it still runs ends first
        from ar.launch import abandoned_outcome

        abandoned_outcome(pending)
    aside = paths.dir / f".ar-stray-{pending.run_id}-{_stamp()}"
    os.rename(pending.dir, aside)
    print(f"ar: {paths.relative(pending.dir)} had no train.py snapshot, so no run made it; moved it to {paths.relative(aside)}",
          file=sys.stderr)


def _stamp() -> str:
    """A name part that two set-asides never share, even within one second."""
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 1_000_000_000:09d}"
