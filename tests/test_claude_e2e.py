"""End to end: the real Claude Code CLI loads this plugin and drives `ar` through a scripted model.

The model is `claude_harness.ScriptedModel` on 127.0.0.1: it answers from a fixed script of tool
calls, so these tests check what the CLI does with the plugin (skill expansion, the agent's
shell, hooks), not what a model would decide. The CLI (npm `@anthropic-ai/claude-code`, pinned)
is installed once into ~/.cache/autoresearch-tests/claude-code; without node/npm or the registry the CLI tests skip.

Tests of parts that other work is still writing are xfail (not strict) while those files are
missing, and become ordinary tests as soon as the files exist.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from claude_harness import REPO, ScriptedModel, bash, run_claude, say, tool
from conftest import make_project

RUN_SKILL = REPO / "skills" / "run" / "SKILL.md"


def _plugin_declares_hooks() -> bool:
    if (REPO / "hooks" / "hooks.json").exists():
        return True
    try:
        return "hooks" in json.loads((REPO / ".claude-plugin" / "plugin.json").read_text())
    except (OSError, ValueError):
        return False


def missing(condition: bool, what: str) -> pytest.MarkDecorator:
    """xfail while a file other work is writing does not exist yet (decided at collection)."""
    return pytest.mark.xfail(condition, reason=f"{what} does not exist yet", strict=False)


needs_run_skill = missing(not RUN_SKILL.exists(), "skills/run/SKILL.md")
needs_references = missing(not (REPO / "references").is_dir(), "references/")
needs_hooks = missing(not _plugin_declares_hooks(), "hooks/hooks.json (the write-discipline hook)")

SHIM = "uv run python .autoresearch/ar.py"


# --------------------------------------------------------------------------------------------
# the scripted model itself (no CLI needed)


def _post(url: str, body: dict) -> tuple[int, str]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _sse(text: str) -> list[dict]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def test_scripted_model_streams_steps_and_answers_side_requests_without_consuming_them() -> None:
    main = {"model": "m", "max_tokens": 100, "stream": True, "tools": [{"name": "Bash", "input_schema": {}}],
            "messages": [{"role": "user", "content": "go"}]}
    with ScriptedModel([bash("echo hi"), say("finished")]) as model:
        # a side request (no tools: title generation, quota probe) gets "ok" and takes no step
        status, text = _post(model.url + "/v1/messages", {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "quota"}]})
        assert status == 200 and json.loads(text)["content"] == [{"type": "text", "text": "ok"}]
        status, text = _post(model.url + "/v1/messages?beta=true", main)
        events = _sse(text)
        assert [e["type"] for e in events] == ["message_start", "content_block_start", "content_block_delta",
                                               "content_block_stop", "message_delta", "message_stop"]
        assert events[1]["content_block"]["name"] == "Bash"
        assert json.loads(events[2]["delta"]["partial_json"])["command"] == "echo hi"
        assert events[4]["delta"]["stop_reason"] == "tool_use"
        # a retry of the same request gets the same step; the next turn gets the next one
        assert _sse(_post(model.url + "/v1/messages", main)[1])[1]["content_block"]["name"] == "Bash"
        turn2 = dict(main, stream=False, messages=[*main["messages"], {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
                                                   {"role": "user", "content": "more"}])
        reply = json.loads(_post(model.url + "/v1/messages", turn2)[1])
        assert reply["content"] == [{"type": "text", "text": "finished"}] and reply["stop_reason"] == "end_turn"
        assert json.loads(_post(model.url + "/v1/messages/count_tokens", main)[1]) == {"input_tokens": 1000}
        assert [r.kind for r in model.requests] == ["side", "main", "main", "main", "other"]
        assert [r.step for r in model.requests if r.kind == "main"] == [0, 0, 1]


# --------------------------------------------------------------------------------------------
# the real CLI


@pytest.fixture
def project(tmp_path: Path):
    return make_project(tmp_path / "proj")


def _skill_body(path: Path) -> str:
    text = path.read_text(encoding="utf-8")
    match = re.match(r"---\n.*?\n---\n", text, re.DOTALL)
    return text[match.end():] if match else text


@needs_run_skill
@pytest.mark.timeout(300)
def test_run_skill_expands_with_plugin_root_and_arguments(project) -> None:
    run = run_claude(project.root, "/autoresearch:run exp", [say("finished")])
    assert run.returncode == 0, run.explain()
    assert "finished" in run.stdout
    first = run.model.main_requests()[0]
    # the expanded skill is a text block of the first user message, after the command tag
    sent = json.dumps(first)
    blocks = [b.get("text", "") for b in first["messages"][0]["content"] if isinstance(b, dict)]
    skill = next((b for b in blocks if b.startswith("Base directory for this skill:")), None)
    assert skill is not None, "no expanded skill in the first user message:\n" + run.explain()
    assert skill.startswith(f"Base directory for this skill: {REPO / 'skills' / 'run'}")
    assert str(REPO / "references" / "loop-protocol.md") in skill
    assert "${CLAUDE_PLUGIN_ROOT}" not in sent and "$ARGUMENTS" not in sent
    body = _skill_body(RUN_SKILL)
    assert "$ARGUMENTS" in body, "the run skill should place its argument ($ARGUMENTS)"
    expected = body.replace("${CLAUDE_PLUGIN_ROOT}", str(REPO)).replace("$ARGUMENTS", "exp").strip()
    assert expected in skill, "the sent skill is not SKILL.md with the two substitutions"


@needs_run_skill
@needs_references
@pytest.mark.timeout(300)
def test_every_plugin_file_the_expanded_skill_names_exists(project) -> None:
    run = run_claude(project.root, "/autoresearch:run exp", [say("finished")])
    assert run.returncode == 0, run.explain()
    named = set(re.findall(re.escape(str(REPO)) + r"/[\w./-]*\w", run.first_prompt()))
    assert named, "the expanded skill names no file of the plugin"
    assert not [p for p in sorted(named) if not os.path.exists(p)], "files the skill names but the plugin lacks"


@needs_run_skill
@pytest.mark.timeout(300)
def test_loop_commands_work_from_the_agents_shell(project) -> None:
    # a tunable sleep lets iteration 2 outlive `ar run --wait 1`; the note and the knob are adjacent
    # lines so a single Edit changes both
    project.write_train("SLEEP = 0\nimport time\ntime.sleep(SLEEP)\nprint('val_loss=2.0' if SLEEP == 0 else 'val_loss=1.0')\n",
                        note="baseline")
    train = str(project.train_py)
    script = [
        bash('command -v ar; ar --version | head -n 1; printf "PATH=%s\\n" "$PATH"'),
        bash(f"{SHIM} run --wait 540"),
        bash(f"{SHIM} wait --wait 540"),
        tool("Read", file_path=train),
        tool("Edit", file_path=train, old_string="RUN_NOTE = 'baseline'\nSLEEP = 0", new_string="RUN_NOTE = 'slower'\nSLEEP = 3"),
        bash(f"{SHIM} run --wait 1"),
        bash(f"{SHIM} wait --wait 540"),
        say("finished"),
    ]
    run = run_claude(project.root, "/autoresearch:run exp", script)
    assert run.returncode == 0, run.explain()
    results = run.tool_results()
    assert len(results) == 7, run.explain()
    which, run1, wait1, read, edit, run2, wait2 = results

    # bare `ar` in the agent's shell is binutils; the plugin's bin/ (if any) comes last on PATH
    if os.path.exists("/usr/bin/ar"):
        assert which.text.splitlines()[0] == "/usr/bin/ar", run.explain()
        assert "GNU ar" in which.text
    path_line = next(line for line in which.text.splitlines() if line.startswith("PATH="))
    assert str(REPO / ".venv") not in path_line
    if (REPO / "bin").is_dir():
        assert path_line.rstrip().endswith(str(REPO / "bin")), path_line

    # iteration 1 through the shim: the three lines, the run on disk
    for result in (run1, wait1):
        assert not result.is_error, run.explain()
        lines = result.text.splitlines()
        assert lines[0].startswith("launched r0001"), run.explain()
        assert lines[1].startswith("metric val_loss=2"), run.explain()
        assert lines[2].startswith("verdict ok/advance"), run.explain()
    assert project.result("r0001")["verdict"] == "advance"

    # iteration 2: the Edit of train.py is allowed; `ar run --wait 1` returns while the run goes
    # on (exit 3), and the run survives the end of that shell command: `ar wait` gets its lines
    assert not read.is_error and not edit.is_error, run.explain()
    assert "still running" in run2.text and "Exit code 3" in run2.text, run.explain()
    assert not wait2.is_error, run.explain()
    lines = wait2.text.splitlines()
    assert lines[0].startswith("launched r0002") and "slower" in lines[0], run.explain()
    assert lines[1].startswith("metric val_loss=1"), run.explain()
    assert lines[2].startswith("verdict ok/advance"), run.explain()
    result = project.result("r0002")
    assert result["status"] == "ok" and result["note"] == "slower"
    assert len(project.rows()) == 2


@needs_hooks
@pytest.mark.timeout(300)
def test_write_discipline_hook_denies_edits_of_prepare_py(project) -> None:
    prepare = project.expr / "prepare.py"
    before = prepare.read_bytes()
    first_line = before.decode().splitlines()[0]
    train_line = project.train_py.read_text().splitlines()[0]
    script = [
        tool("Read", file_path=str(prepare)),  # the Edit tool refuses files not read first
        tool("Edit", file_path=str(prepare), old_string=first_line, new_string=first_line + "  # tampered"),
        tool("Write", file_path=str(prepare), content="# tampered\n"),
        tool("Read", file_path=str(project.train_py)),
        tool("Edit", file_path=str(project.train_py), old_string=train_line, new_string=train_line + "  # edited"),
        say("finished"),
    ]
    run = run_claude(project.root, "/autoresearch:run exp", script)
    assert run.returncode == 0, run.explain()
    results = run.tool_results()
    assert [r.name for r in results] == ["Read", "Edit", "Write", "Read", "Edit"], run.explain()
    _, edit, write, _, edit_train = results
    for denied in (edit, write):
        assert denied.is_error, run.explain()
        assert "hook" in denied.text.lower(), run.explain()  # denied by the hook, with its reason
        assert "prepare.py" in denied.text or "train.py" in denied.text, run.explain()
    assert prepare.read_bytes() == before
    # the hook is specific: train.py, the one file the loop edits, stays editable
    assert not edit_train.is_error, run.explain()
    assert project.train_py.read_text().splitlines()[0] == train_line + "  # edited"


@needs_hooks
@pytest.mark.timeout(300)
def test_setup_writes_train_py_for_the_host_and_fixes_it_until_the_smoke_passes(tmp_path: Path) -> None:
    """The setup's flow in the real CLI: `ar init --entry` writes train.py for the host's pattern,
    `ar smoke` fails (a required option of the host is missing), one Edit of train.py (the only
    file the setup may change) fixes it, and the smoke passes; nothing is recorded as a run."""
    host = tmp_path / "scripts" / "fit.py"
    host.parent.mkdir()
    host.write_text(
        "import argparse\n"
        "parser = argparse.ArgumentParser()\n"
        "parser.add_argument('--lr', type=float, default=0.1)\n"
        "parser.add_argument('--epochs', type=int, required=True)\n"
        "args = parser.parse_args()\n"
        "print(f'val_loss={1.0 / args.epochs + args.lr}')\n"
    )
    before = host.read_bytes()
    ar = f"uv run --quiet --no-dev --project {REPO} autoresearch"
    train = tmp_path / ".autoresearch" / "261201-fit" / "train.py"
    script = [
        bash(f"{ar} init --expr 261201-fit --goal 'lower val_loss' --primary-metric val_loss --primary-direction min "
             "--seconds 60 --entry scripts/fit.py"),
        bash(f"{SHIM} smoke --seconds 60"),
        tool("Read", file_path=str(train)),
        tool("Edit", file_path=str(train), old_string="FIXED_ARGS = []", new_string='FIXED_ARGS = ["--epochs", "4"]'),
        bash(f"{SHIM} smoke --seconds 60"),
        say("Next: /autoresearch:run 261201-fit"),
    ]
    run = run_claude(tmp_path, "/autoresearch:setup fit", script)
    assert run.returncode == 0, run.explain()
    init, smoke1, read, edit, smoke2 = run.tool_results()
    assert not init.is_error and "261201-fit" in init.text, run.explain()
    assert smoke1.is_error and "--epochs" in smoke1.text, run.explain()  # the traceback's end: argparse's line
    assert not read.is_error and not edit.is_error, run.explain()
    assert not smoke2.is_error and "val_loss" in smoke2.text, run.explain()
    assert "Next: /autoresearch:run 261201-fit" in run.stdout
    assert host.read_bytes() == before  # the host's code is never edited
    assert not list((train.parent / "runs").iterdir())  # a smoke records no run
