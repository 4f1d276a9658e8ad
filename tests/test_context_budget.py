"""What one loop iteration costs the agent's context, measured on what the real Claude Code CLI
sends the model: the bytes each iteration adds to the conversation (the model's own tool call,
the tool result, any note the CLI injects), with the run skill's knob form, `--set` + `--note`.

The scripted model runs 12 iterations of one Bash call each. Request k of the main conversation
carries every message up to the model's k-th turn, so the growth from one request to the next is
exactly what one iteration added. Steady state: iterations 3 onwards (the first ones carry the
baseline and the first advance). BENCHMARKS.md reports the figure.
"""

from __future__ import annotations

import json
import statistics

import pytest
from claude_harness import bash, flatten, run_claude, say

from conftest import make_project

SHIM = "uv run python .autoresearch/ar.py"
BUDGET_BYTES = 700  # >= 1,000 iterations per 200k tokens
ITERATIONS = 12


def conversation_bytes(body: dict) -> int:
    """The text the model receives in the messages: tool inputs, tool results, notes, prompts."""
    return sum(len(flatten(message.get("content")).encode()) for message in body.get("messages", []))


@pytest.mark.timeout(600)
def test_a_steady_iteration_costs_at_most_700_bytes_of_context(tmp_path) -> None:
    project = make_project(tmp_path / "proj")
    project.ar("session", "--max-runs", "100", "--plateau", "50", check=True)
    project.train_py.write_text("RUN_NOTE = 'baseline'\nLEARNING_RATE = 0.5\nprint(f'val_loss={abs(LEARNING_RATE - 0.1) + 1:.4f}')\n")
    values = [0.5, 0.3, 0.9, 0.2, 0.8, 0.25, 0.7, 0.22, 0.6, 0.4, 0.35, 0.45][:ITERATIONS]
    script = [bash(f"{SHIM} run --wait 540 --set LEARNING_RATE={v} --note 'lr {v}'") for v in values] + [say("done")]
    run = run_claude(project.root, "/autoresearch:run exp", script, env={"AR_NONINTERACTIVE": "1"}, timeout=500)
    assert run.returncode == 0, run.explain()
    results = run.tool_results()
    assert len(results) == ITERATIONS and all("verdict " in r.text for r in results), run.explain()
    mains = sorted(run.model.main_requests(), key=lambda body: len(body.get("messages", [])))
    sizes = [conversation_bytes(body) for body in mains]
    growth = [b - a for a, b in zip(sizes, sizes[1:])][:ITERATIONS]
    steady = growth[2:]
    report = {"per_iteration": growth, "steady_median": statistics.median(steady), "steady_max": max(steady)}
    print(json.dumps(report))
    assert statistics.median(steady) <= BUDGET_BYTES, report
    assert max(steady) <= BUDGET_BYTES * 1.2, report


@pytest.mark.timeout(600)
def test_a_conversation_without_its_earlier_turns_rebuilds_from_status(tmp_path) -> None:
    """What survives a compaction is the entry command: a fresh conversation (every earlier turn
    dropped) gets the whole state from it and the loop goes on where it was."""
    project = make_project(tmp_path / "proj")
    project.train_py.write_text("RUN_NOTE = 'baseline'\nLEARNING_RATE = 0.5\nprint(f'val_loss={abs(LEARNING_RATE - 0.1) + 1:.4f}')\n")
    first = run_claude(project.root, "/autoresearch:run exp", [
        bash(f"{SHIM} run --wait 540 --set LEARNING_RATE=0.5 --note 'lr 0.5'"),
        bash(f"{SHIM} run --wait 540 --set LEARNING_RATE=0.2 --note 'lr 0.2'"),
        say("done")], env={"AR_NONINTERACTIVE": "1"}, timeout=300)
    assert first.returncode == 0, first.explain()
    entry = 'echo "${AR_NONINTERACTIVE:-0}"; ' + f"{SHIM} status --json"
    second = run_claude(project.root, "/autoresearch:run exp", [
        bash(entry), bash(f"{SHIM} run --wait 540 --set LEARNING_RATE=0.3 --note 'lr 0.3'"), say("done")],
        env={"AR_NONINTERACTIVE": "1"}, timeout=300)
    assert second.returncode == 0, second.explain()
    status_text, run_text = (r.text for r in second.tool_results())
    state = json.loads(status_text.split("\n", 1)[1])
    assert state["expr"] == "exp" and state["runs"] == 2 and state["best"]["run_id"] == "r0002", state
    assert run_text.startswith("launched r0003") and "restored r0002" in run_text, run_text


SLOT_ITERATIONS = 8


@pytest.mark.timeout(600)
def test_a_steady_iteration_with_slots_costs_at_most_700_bytes_of_context(tmp_path) -> None:
    """With two slots an iteration is two Bash calls, the skill's form: `wait --any` (the next
    run's three lines) and one `submit` (one line)."""
    project = make_project(tmp_path / "proj")
    project.train_py.write_text("RUN_NOTE = 'baseline'\nLEARNING_RATE = 0.5\nprint(f'val_loss={abs(LEARNING_RATE - 0.1) + 1:.4f}')\n")
    project.ar("run", check=True)
    project.ar("session", "--slots", "2", "--max-runs", "100", "--plateau", "50", check=True)
    values = [0.3, 0.9, 0.2, 0.8, 0.25, 0.7, 0.22, 0.6, 0.4, 0.35][:SLOT_ITERATIONS + 2]

    def submit(v: float):
        return bash(f"{SHIM} submit --set LEARNING_RATE={v} --note 'lr {v}'")

    wait = bash(f"{SHIM} wait --any --wait 540")
    script = [submit(values[0]), submit(values[1])]
    for v in values[2:]:
        script += [wait, submit(v)]
    script += [wait, wait, say("done")]
    run = run_claude(project.root, "/autoresearch:run exp", script, env={"AR_NONINTERACTIVE": "1"}, timeout=500)
    assert run.returncode == 0, run.explain()
    texts = [r.text for r in run.tool_results()]
    assert sum("verdict " in t for t in texts) == len(values) and sum(t.startswith("submitted r") for t in texts) == len(values), run.explain()
    mains = sorted(run.model.main_requests(), key=lambda body: len(body.get("messages", [])))
    sizes = [conversation_bytes(body) for body in mains]
    # request 2k+2 follows the k-th iteration's pair of calls (after the two that fill the slots)
    growth = [sizes[2 * k + 4] - sizes[2 * k + 2] for k in range(SLOT_ITERATIONS)]
    steady = growth[1:]
    report = {"per_iteration": growth, "steady_median": statistics.median(steady), "steady_max": max(steady)}
    print(json.dumps(report))
    assert statistics.median(steady) <= BUDGET_BYTES, report
    assert max(steady) <= BUDGET_BYTES * 1.2, report
