"""The write-discipline hook (hooks/write_discipline.py), fed the JSON Claude Code sends a
PreToolUse hook on stdin, as a subprocess under `python -S` like hooks.json runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, Project, make_project

HOOK = REPO / "hooks" / "write_discipline.py"
FROZEN = "frozen data and metric contract"
BRIEF = "frozen brief"
OWNED = "is written only by ar"


@pytest.fixture
def loop(tmp_path: Path) -> Project:
    """A project with two experiments; 'exp' (created last) is the current one."""
    make_project(tmp_path, slug="other")
    return make_project(tmp_path, slug="exp")


def payload(cwd: Path, tool: str, **tool_input) -> dict:
    return {
        "session_id": "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f",
        "transcript_path": "/root/.claude/projects/-tmp-proj/9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f.jsonl",
        "cwd": str(cwd),
        "permission_mode": "acceptEdits",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": "toolu_01ABCDEF",
    }


def edit(cwd: Path, path: str | Path) -> dict:
    return payload(cwd, "Edit", file_path=str(path), old_string="lr = 0.01", new_string="lr = 0.02", replace_all=False)


def bash(cwd: Path, command: str) -> dict:
    return payload(cwd, "Bash", command=command, description="a command")


def run_hook(stdin: str | dict) -> subprocess.CompletedProcess:
    text = stdin if isinstance(stdin, str) else json.dumps(stdin)
    return subprocess.run([sys.executable, "-S", str(HOOK)], input=text, capture_output=True, text=True, timeout=30)


def allowed(stdin: str | dict) -> bool:
    done = run_hook(stdin)
    assert done.returncode == 0 and done.stderr == "", done
    return done.stdout == ""


def denial(stdin: str | dict) -> str:
    """The deny reason; fails unless the output is exactly the PreToolUse deny decision."""
    done = run_hook(stdin)
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.endswith("\n") and done.stdout.count("\n") == 1, done.stdout
    output = json.loads(done.stdout)
    assert list(output) == ["hookSpecificOutput"]
    decision = output["hookSpecificOutput"]
    assert set(decision) == {"hookEventName", "permissionDecision", "permissionDecisionReason"}
    assert decision["hookEventName"] == "PreToolUse" and decision["permissionDecision"] == "deny"
    reason = decision["permissionDecisionReason"]
    assert "\n" not in reason and len(reason) < 1000
    assert ".autoresearch/exp/train.py" in reason  # always says what may be edited
    return reason


def test_current_train_py_is_allowed_for_every_edit_tool(loop: Project) -> None:
    train = loop.train_py
    assert allowed(edit(loop.root, train))
    assert allowed(payload(loop.root, "Write", file_path=str(train), content="RUN_NOTE = 'x'\n"))
    assert allowed(payload(loop.root, "MultiEdit", file_path=str(train), edits=[{"old_string": "a", "new_string": "b"}]))
    assert allowed(edit(loop.root, ".autoresearch/exp/train.py"))  # relative to cwd
    assert allowed(edit(loop.expr, "train.py"))
    assert allowed(edit(loop.root, ".autoresearch/other/../exp/train.py"))


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("exp/prepare.py", FROZEN),
        ("exp/program.md", BRIEF),
        ("exp/.ar-session.json", "ar.py session --<setting>"),
        ("exp/results.tsv", OWNED),
        ("exp/best.json", OWNED),
        ("exp/.ar-state.json", OWNED),
        ("exp/train.py.baseline", OWNED),
        ("exp/best_ckpt/meta.json", OWNED),
        ("exp/runs/r0001/run.log", OWNED),
        ("exp/runs/r0001/train.py", "copy it onto .autoresearch/exp/train.py"),
        ("other/train.py", "'other' is not the current experiment"),
        ("other/prepare.py", FROZEN),
        (".chain-session.json", "written only by ar"),
        ("ar.py", "written only by ar"),
        ("exp/notes.md", "outside .autoresearch/"),
    ],
)
def test_everything_else_under_autoresearch_is_denied_with_its_reason(loop: Project, relative: str, expected: str) -> None:
    reason = denial(edit(loop.root, loop.root / ".autoresearch" / relative))
    assert expected in reason and f".autoresearch/{relative}" in reason


def test_frozen_files_and_settings_name_the_way_forward(loop: Project) -> None:
    assert "uv run python .autoresearch/ar.py init" in denial(edit(loop.root, loop.expr / "prepare.py"))
    assert "chain-init --goal" in denial(edit(loop.root, loop.expr / "program.md"))
    assert "`ar run` refuses" in denial(edit(loop.root, loop.expr / "program.md"))
    assert "chain-init" in denial(edit(loop.root, loop.root / ".autoresearch" / "other" / "train.py"))


def test_relative_dotdot_and_symlinked_paths_are_resolved(loop: Project) -> None:
    assert FROZEN in denial(edit(loop.root, ".autoresearch/exp/prepare.py"))
    assert FROZEN in denial(edit(loop.expr, "prepare.py"))
    assert FROZEN in denial(edit(loop.root, ".autoresearch/exp/../exp/prepare.py"))
    assert FROZEN in denial(edit(loop.expr / "runs", "../prepare.py"))
    assert FROZEN in denial(edit(loop.root, "src/../.autoresearch/exp/prepare.py"))
    (loop.root / "contract.py").symlink_to(loop.expr / "prepare.py")
    assert FROZEN in denial(edit(loop.root, "contract.py"))
    (loop.root / "state").symlink_to(loop.root / ".autoresearch")
    assert OWNED in denial(edit(loop.root, "state/exp/results.tsv"))
    (loop.root / "deep").mkdir()
    (loop.root / "deep" / "inside").symlink_to(loop.expr / "runs")
    assert FROZEN in denial(edit(loop.root, "deep/inside/../prepare.py"))  # `..` after a symlink leaves its target
    (loop.root / "current.py").symlink_to(loop.train_py)
    assert allowed(edit(loop.root, "current.py"))  # a link to train.py is train.py


def test_notebook_edits_are_checked_by_notebook_path(loop: Project) -> None:
    cell = {"new_source": "x = 1", "cell_id": "a1", "edit_mode": "replace"}
    reason = denial(payload(loop.root, "NotebookEdit", notebook_path=str(loop.expr / "analysis.ipynb"), **cell))
    assert ".autoresearch/exp/analysis.ipynb" in reason
    assert allowed(payload(loop.root, "NotebookEdit", notebook_path=str(loop.root / "analysis.ipynb"), **cell))


def test_files_outside_autoresearch_are_allowed(loop: Project) -> None:
    assert allowed(edit(loop.root, loop.root / "src" / "model.py"))
    assert allowed(edit(loop.root, "README.md"))
    assert allowed(edit(loop.root, ".autoresearch-notes/exp/prepare.py"))
    assert allowed(edit(loop.root, "/etc/hosts"))


def test_no_active_loop_allows_everything(loop: Project) -> None:
    chain_session = loop.root / ".autoresearch" / ".chain-session.json"
    session = json.loads(chain_session.read_text())
    chain_session.write_text(json.dumps({**session, "current_slug": "gone"}))  # its experiment no longer exists
    assert allowed(edit(loop.root, loop.expr / "prepare.py"))
    chain_session.unlink()
    assert allowed(edit(loop.root, loop.expr / "prepare.py"))
    assert allowed(bash(loop.root, "echo x > .autoresearch/exp/prepare.py"))


def test_a_project_without_autoresearch_is_left_alone(tmp_path: Path) -> None:
    assert allowed(edit(tmp_path, tmp_path / "train.py"))
    assert allowed(bash(tmp_path, "echo x > out.txt && rm -rf build"))


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("echo 'lr = 1' > .autoresearch/exp/prepare.py", FROZEN),
        ("printf 'x\\n' >> .autoresearch/exp/results.tsv", OWNED),
        ("python make.py 2>/dev/null >.autoresearch/exp/best.json", OWNED),
        ("sed -i 's/lr = 0.1/lr = 1/' .autoresearch/exp/prepare.py", FROZEN),
        ("sed -i.bak -e 's/a/b/' .autoresearch/exp/program.md", BRIEF),
        ("perl -pi -e 's/a/b/' .autoresearch/exp/prepare.py", FROZEN),
        ("cp /tmp/prepare.py .autoresearch/exp/prepare.py", FROZEN),
        ("cp helper.py .autoresearch/exp/", "outside .autoresearch/"),
        ("mv .autoresearch/exp/prepare.py /tmp/", FROZEN),
        ("cat new.md | tee .autoresearch/exp/program.md", BRIEF),
        ("cd .autoresearch/exp && sed -i 's/a/b/' prepare.py", FROZEN),
        ("rm -rf .autoresearch/exp/runs/r0001", OWNED),
        ("truncate -s 0 .autoresearch/exp/results.tsv", OWNED),
        ("cat > .autoresearch/exp/.ar-session.json <<'EOF'\n{}\nEOF", "ar.py session"),
        ("ls\necho x > .autoresearch/other/train.py", "'other' is not the current experiment"),
    ],
)
def test_bash_writes_into_autoresearch_are_denied(loop: Project, command: str, expected: str) -> None:
    assert expected in denial(bash(loop.root, command))


@pytest.mark.parametrize(
    "command",
    [
        "cat .autoresearch/exp/prepare.py",
        "head -n 40 .autoresearch/exp/program.md && tail -n 5 .autoresearch/exp/results.tsv",
        "grep -n lr .autoresearch/exp/train.py; diff .autoresearch/exp/train.py .autoresearch/exp/train.py.baseline",
        "uv run python .autoresearch/ar.py run --wait 540 2>&1 | tail -n 5",
        "uv run python .autoresearch/ar.py session --max-runs 50 --plateau 10",
        "uv run python .autoresearch/ar.py status --compact > /tmp/status.txt",
        "sed 's/a/b/' .autoresearch/exp/prepare.py > /tmp/prepare.py",
        "sed -i 's/lr = 0.1/lr = 0.05/' .autoresearch/exp/train.py",
        "cp .autoresearch/exp/runs/r0001/train.py .autoresearch/exp/train.py",
        "echo 'RUN_NOTE = \"x\"' > .autoresearch/exp/train.py",
        "cat > notes.md <<'EOF'\necho x > .autoresearch/exp/prepare.py\nEOF",
        "git diff -- .autoresearch/exp/train.py > /tmp/patch.diff",
    ],
)
def test_bash_reads_the_shim_and_train_py_writes_are_allowed(loop: Project, command: str) -> None:
    assert allowed(bash(loop.root, command))


@pytest.mark.parametrize(
    "stdin",
    [
        "",
        "not json",
        "[1, 2]",
        '{"tool_name": "Edit"}',
        '{"tool_name": "Edit", "tool_input": "x", "cwd": "/"}',
        '{"tool_name": "Edit", "tool_input": {"file_path": 7}, "cwd": "/"}',
        '{"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "echo \\"unterminated"}, "cwd": "/"}',
        "\x00\xff{",
    ],
)
def test_malformed_input_is_allowed_silently(stdin: str) -> None:
    assert allowed(stdin)


def test_other_events_and_tools_are_allowed(loop: Project) -> None:
    assert allowed({**edit(loop.root, loop.expr / "prepare.py"), "hook_event_name": "PostToolUse"})
    assert allowed(payload(loop.root, "Read", file_path=str(loop.expr / "prepare.py")))


def test_hooks_json_registers_the_script_for_the_checked_tools(loop: Project) -> None:
    config = json.loads((REPO / "hooks" / "hooks.json").read_text())
    (entry,) = config["hooks"]["PreToolUse"]
    assert set(entry["matcher"].split("|")) == {"Edit", "Write", "MultiEdit", "NotebookEdit", "Bash"}
    (hook,) = entry["hooks"]
    assert hook["type"] == "command"
    assert "${CLAUDE_PLUGIN_ROOT}/hooks/write_discipline.py" in hook["command"]
    if shutil.which("python3") is None:
        pytest.skip("python3 is not on PATH")
    # the command line itself, as Claude Code runs it: a shell with CLAUDE_PLUGIN_ROOT in the environment
    env = {**os.environ, "CLAUDE_PLUGIN_ROOT": str(REPO)}
    done = subprocess.run(hook["command"], shell=True, env=env, input=json.dumps(edit(loop.root, loop.expr / "prepare.py")), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and json.loads(done.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny", done
    done = subprocess.run(hook["command"], shell=True, env=env, input=json.dumps(edit(loop.root, loop.train_py)), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and done.stdout == "", done
