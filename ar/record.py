"""Recording a judged run: promote or restore, the results row, the counters.

Every step first checks whether it already happened, so `repair` can redo the whole
sequence after a kill at any point and the end state is the same.
"""

from __future__ import annotations

from ar import results_log
from ar.best import load_best, restore_source, restore_train_py, train_py_bytes
from ar.checkpoints import discard, promote
from ar.faults import crash_point
from ar.layout import ExperimentPaths, parse_run_id
from ar.state import after_run, load_state, save_state


def apply_result(paths: ExperimentPaths, result: dict) -> None:
    """Effects of a recorded result; each step checks whether it already happened."""
    if result["verdict"] == "advance":
        promote(paths, result)  # best_ckpt/ and best.json; resumes a swap a kill interrupted
    best = load_best(paths)
    if not paths.run(result["run_id"]).submitted.exists():
        restore_train_py(paths, best)  # kept (the new best's code: a confirmed candidate's) or restored
    elif train_py_bytes(paths.train_py) == _restore_target_before(paths, result):
        # `ar submit` restored train.py when the run started; since then the agent may be writing
        # the next candidate, which must not be overwritten. Untouched, it moves to a new best.
        restore_train_py(paths, best)
    if result["verdict"] != "advance":
        discard(paths, result)  # its checkpoint is not kept: disk use stays bounded
    crash_point("after_promote_or_restore")
    last = results_log.tail_rows(paths.results, 1)
    if not last or last[0]["run_id"] != result["run_id"]:
        results_log.append_row(paths.results, result)
    crash_point("after_row")
    state = load_state(paths)
    if state.last_run != parse_run_id(result["run_id"]):  # its row is the last: were the counters saved after it?
        value = result["primary"]["value"]
        save_state(paths, after_run(state, result["run_id"], result["status"], result["verdict"], value))
    from ar.seal import seal  # here: only a command that records a run pays for importing git's caller

    seal(paths)


def _restore_target_before(paths: ExperimentPaths, result: dict) -> bytes | None:
    """train.py as it was restored before this run was recorded: the previous best's snapshot."""
    before = result.get("previous_best")
    try:
        return restore_source(paths, {"run_id": before["run_id"]} if before else None).read_bytes()
    except (OSError, TypeError, KeyError):
        return None
