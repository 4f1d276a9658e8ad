"""The lines `ar run` prints (at most 3: launched / metric / verdict), shared with `ar wait`.

Short and greppable: the agent reads them every iteration, thousands of times a night.
"""

from __future__ import annotations

from ar.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_TERMINATED, as_typed
from ar.layout import ExperimentPaths
from ar.text import clip

NOTE_CHARS = 60


def number(value: float | None) -> str:
    return "none" if value is None else format(value, ".6g")


def launched(run_id: str, seconds: int, note: str, usual_seconds: int | None = None) -> str:
    """The budget is shown only when it is not the session's (`--seconds` for this run)."""
    budget = "" if seconds == usual_seconds else f" ({seconds}s budget)"
    return f"launched {run_id}{budget}: {clip(note, NOTE_CHARS) or '(no RUN_NOTE)'}"


def still_running(run_id: str) -> str:
    return as_typed(f"{run_id} still running; re-attach with `ar wait --wait 540`")


def metric(result: dict) -> str:
    primary = result["primary"]
    prev = result["previous_best"]
    before = f"best before {number(prev['value'])} {prev['run_id']}" if prev else "no best before"
    value = primary["value"]
    shown = number(value) if value is not None else "missing"
    best = result.get("best") or {}
    if result.get("group") and best.get("run_id") == result["run_id"] and best.get("n", 1) > 1:
        noise = best.get("noise") or {}
        sigma = f", sigma {number(noise['sigma'])}" if noise.get("sigma") is not None else ""
        before = f"{before}; mean {number(best['value'])} of {best['n']}{sigma}"
    return f"metric {primary['name']}={shown} ({primary['direction']}; {before}; {result['wall_seconds']:.1f}s)"


def verdict(paths: ExperimentPaths, result: dict) -> str:
    parts = [f"verdict {result['status']}/{result['verdict']}"]
    if result["verdict"] == "advance":
        parts += ["kept", result["reason"]] if result["reason"] else ["kept"]  # `simpler at equal metric`
    else:
        if result["reason"]:
            parts.append(result["reason"])
        parts.append(result["train_py"].replace("restored from", "restored"))  # train.py's fate
    if result["status"] in ("crash", "timeout"):
        parts.append(as_typed(f"see `ar tail --run {result['run_id']}`"))
    parts.append(result["progress"])
    if result["terminated_by"]:
        parts.append(f"TERMINATED by {result['terminated_by']}")
    parts.append(f"runs/{result['run_id']}/")  # the experiment is known: its result.json is there
    return " | ".join(parts)


def finished(paths: ExperimentPaths, result: dict) -> list[str]:
    return [metric(result), verdict(paths, result)]


def exit_code(result: dict) -> int:
    if result["status"] == "interrupted":
        return EXIT_INTERRUPTED
    return EXIT_TERMINATED if result["should_terminate"] else EXIT_OK


def all_lines(paths: ExperimentPaths, result: dict, usual_seconds: int | None = None) -> list[str]:
    return [launched(result["run_id"], result["seconds"], result["note"], usual_seconds), *finished(paths, result)]
