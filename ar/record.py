"""Recording a judged run: promote or restore, the results row, the counters.

Every step first checks whether it already happened, so `repair` can redo the whole
sequence after a kill at any point and the end state is the same.
"""

from __future__ import annotations

from ar import results_log
from ar.best import load_best, restore_train_py
from ar.checkpoints import discard, promote
from ar.faults import crash_point
from ar.layout import ExperimentPaths, parse_run_id
from ar.state import after_run, load_state, save_state


def apply_result(paths: ExperimentPaths, result: dict) -> None:
    """Effects of a recorded result; each step checks whether it already happened."""
    if result["verdict"] == "advance":
        promote(paths, result)  # best_ckpt/ and best.json; resumes a swap a kill interrupted
        restore_train_py(paths, load_best(paths))  # train.py is the new best's (a confirmed candidate's code)
    else:
        restore_train_py(paths, load_best(paths))
        discard(paths, result)  # its checkpoint is not kept: disk use stays bounded
    crash_point("after_promote_or_restore")
    last = results_log.tail_rows(paths.results, 1)
    if not last or last[0]["run_id"] != result["run_id"]:
        results_log.append_row(paths.results, result)
    crash_point("after_row")
    state = load_state(paths)
    if state.last_run < parse_run_id(result["run_id"]):
        value = result["primary"]["value"]
        save_state(paths, after_run(state, result["run_id"], result["status"], result["verdict"], value))
    from ar.seal import seal  # here: only a command that records a run pays for importing git's caller

    seal(paths)


