"""Docs and code agree: every command, flag, file and result field the skills, references and
README mention exists; the verdict table is the code's; skill frontmatter is valid."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from conftest import REPO, Project, printing

from ar.cli import app
from ar.verdict import VERDICT_TABLE

SKILLS = sorted((REPO / "skills").glob("*/SKILL.md"))
REFERENCES = sorted((REPO / "references").glob("*.md"))
AGENT_DOCS = SKILLS + REFERENCES
ALL_DOCS = [*AGENT_DOCS, REPO / "README.md", REPO / "BENCHMARKS.md"]

# `ar <command>`, `AR <command>` (the skills' shorthand for the shim), `ar.py <command>` or the
# console script, `autoresearch <command>`
COMMAND = re.compile(r"(?:(?<![\w/.-])(?:ar|autoresearch)|\bAR|ar\.py)\s+([a-z][a-z-]*)")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z_-]*")
# Flags of other tools that the docs show next to ar (uv, pytest, claude, the benchmark scripts).
OTHER_TOOLS = {"--project", "--no-dev", "--quiet", "--compile-bytecode", "--locked", "--python", "--plugin-dir", "--strict", "--mb", "--quick", "--baseline-rev", "--files", "--standalone", "--num_processes", "--multi_gpu", "--main_process_port", "--repeats", "--pairs", "--untracked-files", "--version", "--help", "--debug"}
# A host program's own options, in examples of what train.py passes to it (tests/hosts/ projects).
OTHER_TOOLS |= {"--lr", "--learning_rate", "--hidden", "--log_dir", "--max_steps", "--n_embd", "--n_layer", "--optimizer", "--out", "--warmup_ratio", "--weight_decay", "--config", "--output_dir", "--ckpt_dir", "--save_dir", "--seed", "--fp16", "--epochs"}
OTHER_TOOLS |= {"--gres", "--mem", "--cpus-per-task", "--parsable", "--time", "--signal", "--output", "--no-follow", "--export", "--no-requeue"}  # sbatch's, sky's
OTHER_TOOLS |= {"--runs", "--train", "--think", "--slurm"}  # bench/bench_slots.py


def cli_flags() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    return {name: {opt for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")} | {"--help"} for name, cmd in group.commands.items()}


def mentions(path: Path) -> list[tuple[str, set[str]]]:
    """(command, flags written after it on the same line, up to a table cell or shell separator)."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        matches = list(COMMAND.finditer(line))
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(line)
            segment = re.split(r"\s\|\s|;|&&|`\s*\(", line[match.end() : end])[0]
            found.append((match.group(1), set(FLAG.findall(segment))))
    return found


@pytest.mark.parametrize("path", ALL_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_mentioned_command_and_flag_exists(path: Path) -> None:
    commands = cli_flags()
    words = {"run", "status", "wait", "stop", "init", "session", "tail", "report", "demo", "doctor", "chain-init", "shim"}
    for command, flags in mentions(path):
        if command not in words and command not in commands:
            continue  # prose such as "ar is", "AR are"
        assert command in commands, f"{path.name}: `ar {command}` is not a command"
        unknown = flags - commands[command] - OTHER_TOOLS
        assert not unknown, f"{path.name}: `ar {command}` has no {sorted(unknown)}"
    every_flag = set().union(*commands.values()) | OTHER_TOOLS
    stray = set(FLAG.findall(path.read_text(encoding="utf-8"))) - every_flag
    assert not stray, f"{path.name} mentions flags no command has: {sorted(stray)}"


def test_result_json_reference_lists_exactly_the_fields_ar_writes(project: Project) -> None:
    project.write_train(printing("0.5"))
    project.ar("run", check=True)
    written = set(project.result("r0001"))
    text = (REPO / "references" / "result-json.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", text, re.M))
    assert documented == written


def test_docs_verdict_table_is_the_codes() -> None:
    code = [(status, verdict) for status, verdict, _ in VERDICT_TABLE]
    readme = (REPO / "README.md").read_text()
    rows = re.findall(r"^\| (ok|invalid|crash|timeout|interrupted|unclean) \| (\w+) \|", readme, re.M)
    assert rows == code


@pytest.mark.parametrize("path", AGENT_DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_agent_docs_call_the_shim_never_bare_ar(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    bare = [m.group(0) for m in re.finditer(r"(?:`|^\s*)ar [a-z-]+", text, re.M)]
    assert not bare, f"{path.name} tells the agent to run bare ar (binutils in its shell): {bare}"
    for ref in re.findall(r"\$\{CLAUDE_PLUGIN_ROOT\}/([\w./-]+)", text):
        assert (REPO / ref).exists(), f"{path.name} points at missing {ref}"


def frontmatter(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), path
    head = text.split("---\n", 2)[1]
    fields = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        assert key and value.strip(), f"{path}: bad frontmatter line {line!r}"
        fields[key.strip()] = value.strip().strip('"')
    return fields


@pytest.mark.parametrize("path", SKILLS, ids=lambda p: p.parent.name)
def test_skill_frontmatter(path: Path) -> None:
    fields = frontmatter(path)
    assert fields["name"] == path.parent.name
    assert 50 < len(fields["description"]) < 1024
    assert fields["allowed-tools"]
    if path.parent.name == "run":
        for phrase in ("start the autoresearch loop", "kick off overnight iteration", "resume autoresearch", "chain through follow-up experiments"):
            assert phrase in fields["description"], phrase


@pytest.mark.parametrize("path", SKILLS, ids=lambda p: p.parent.name)
def test_interview_fits_the_question_tool(path: Path) -> None:
    """At most 4 questions per AskUserQuestion call, 2-4 options each (the tool's limits)."""
    text = path.read_text(encoding="utf-8")
    section = re.search(r"AskUserQuestion call[^\n]*\n(.*?)(?:\n## |\Z)", text, re.S).group(1)
    questions = re.findall(r"^\d+\. \*\*[^*]+\*\*: (.*)$", section, re.M)
    assert 1 <= len(questions) <= 4, questions
    for question in questions:
        options = question.split("?", 1)[-1].replace("options:", "").split(" / ")
        assert 2 <= len(options) <= 4, question
