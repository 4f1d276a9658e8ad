"""`ar chain-init`, the chain budget and chain_budget termination (SPEC §5.4, §7).

Real CLI in throwaway projects. The parent's checkpoint is what a run saves into $AR_CKPT_DIR;
where best.json does not name it (no checkpoint promotion), the test puts it in place by hand.
"""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project

from ar.termination import with_chain

CKPT_BODY = """
import os
from pathlib import Path
ckpt = Path(os.environ['AR_CKPT_DIR'])
ckpt.mkdir(parents=True, exist_ok=True)
(ckpt / 'model.pt').write_text('weights {value}')
print('parent', os.environ.get('AR_PARENT_CKPT', 'none'))
print('val_loss={value}')
"""
LOG_PATTERN = r"{name}=(?P<value>\S+)"


def chain_state(project: Project) -> dict:
    return json.loads((project.root / ".autoresearch" / ".chain-session.json").read_text())


def run_value(project: Project, value: float, slug: str | None = None, note: str = "try") -> dict:
    target = project.root / ".autoresearch" / (slug or project.slug)
    (target / "train.py").write_text(f"RUN_NOTE = {note!r}\n" + CKPT_BODY.format(value=value))
    done = project.ar("run", "--expr", slug or project.slug)
    assert done.returncode in (0, 4), done.stdout + done.stderr
    run_id = done.stdout.split()[1].rstrip(":")
    return json.loads((target / "runs" / run_id / "result.json").read_text())


def parent_with_best(root: Path, *session_args: str) -> Project:
    """r0001 0.9 advance, r0002 0.5 advance (the best), r0003 0.7 revert."""
    project = make_project(
        root, "--constraints", "peak_rss_mb<=9000", "--log-pattern", LOG_PATTERN,
        "--checkpoint-glob", "{run_dir}/ckpt/*.pt", "--mutation-scope", "the learning rate", slug="par",
    )
    if session_args:
        project.ar("session", *session_args, check=True)
    for value in (0.9, 0.5, 0.7):
        run_value(project, value, note=f"value {value}")
    best = project.best()
    assert best["run_id"] == "r0002"
    if not best.get("checkpoint"):  # no checkpoint promotion: put the best run's checkpoint in place
        (project.expr / "best_ckpt").mkdir(exist_ok=True)
        (project.expr / "best_ckpt" / "model.pt").write_text("weights 0.5")
        (project.expr / "best.json").write_text(json.dumps({**best, "checkpoint": "best_ckpt/model.pt"}))
    return project


def chain_init(project: Project, slug: str, *extra: str, parent: str = "par", rationale: str = "par plateaued; fine-tune", env=None):
    args = ["chain-init", "--from-expr", parent, "--new-slug", slug, "--rationale", rationale, *extra]
    return project.ar(*args, env=env)


def settings(project: Project, slug: str) -> dict:
    return json.loads(project.ar("session", "--json", "--expr", slug, check=True).stdout)


def listing(project: Project) -> dict[str, bytes]:
    """Every entry of .autoresearch/ (names) and the chain session's bytes: what a failure must not change."""
    state = project.root / ".autoresearch"
    return {"names": sorted(p.name for p in state.iterdir()), "chain": (state / ".chain-session.json").read_bytes()}


def assert_refused(done, *words: str) -> None:
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ar: ") and "(fix: " in lines[0], done.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---------------------------------------------------------------- the child


def test_chain_init_creates_the_child_from_the_parents_best(tmp_path: Path) -> None:
    project = parent_with_best(
        tmp_path, "--chain-mode", "max_n", "--chain-max", "2", "--max-runs", "10", "--plateau", "4", "--threshold", "0.1",
        "--max-failures", "3", "--min-delta", "0.001", "--min-rel-delta", "0.01", "--seconds", "25",
    )
    report = project.ar("report", "--expr", "par", check=True).stdout
    rationale = "  r0002 halved val_loss;\nnow fine-tune from its weights \"as is\" ü  "
    done = chain_init(project, "kid", "--goal", "fine-tune par", rationale=rationale)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "kid\n"

    parent, kid = project.expr, project.root / ".autoresearch" / "kid"
    best_train = (parent / "runs" / "r0002" / "train.py").read_bytes()
    assert (kid / "train.py").read_bytes() == best_train == (kid / "train.py.baseline").read_bytes()
    assert (kid / "prepare.py").read_bytes() == (parent / "prepare.py").read_bytes()
    assert (kid / "results.tsv").read_text().count("\n") == 1 and not any((kid / "runs").iterdir())

    mine, theirs = settings(project, "kid"), settings(project, "par")
    for key in ("runner", "metric_backend", "log_pattern", "tb_events_glob", "checkpoint_glob", "constraints", "mutation_scope",
                "primary_metric", "primary_direction"):
        assert mine["experiment"][key] == theirs["experiment"][key], key
    assert mine["experiment"]["goal"] == "fine-tune par"
    assert mine["experiment"]["parent_slug"] == "par"
    parent_ckpt = ".autoresearch/par/" + project.best()["checkpoint"]
    assert mine["experiment"]["parent_ckpt"] == parent_ckpt
    loop = {k: v for k, v in theirs["loop"].items() if k not in ("resume",)}
    assert {k: mine["loop"][k] for k in loop} == loop  # threshold kept: same metric and direction
    assert mine["loop"]["threshold"] == 0.1 and mine["loop"]["seconds"] == 25

    decision_path = kid / "chain_decision.json"
    assert stat.S_IMODE(decision_path.stat().st_mode) == 0o444
    decision = json.loads(decision_path.read_text())
    assert decision["rationale"] == rationale  # verbatim
    assert decision["parent_slug"] == "par" and decision["position"] == 1
    assert decision["parent_best"] == {"run_id": "r0002", "value": 0.5}
    assert decision["parent_baseline"] == {"run_id": "r0001", "value": 0.9}
    assert decision["parent_report_sha256"] == hashlib.sha256(report.encode()).hexdigest()
    assert decision["parent_ckpt"] == parent_ckpt and decision["created_at"].endswith("Z")
    program = (kid / "program.md").read_text()
    assert "Follows `par`" in program and "now fine-tune from its weights" in program

    chain = chain_state(project)
    assert chain["current_slug"] == "kid" and chain["chain_trail"] == ["par", "kid"]
    assert chain["chain_mode"] == "max_n" and chain["chain_remaining"] == 1
    status = json.loads(project.ar("status", "--json", check=True).stdout)
    assert status["expr"] == "kid" and status["noninteractive"] is True and status["chain_remaining"] == 1
    assert "chain max_n: 1 remaining; next entry non-interactive" in project.ar("status", "--compact", check=True).stdout
    assert json.loads(project.ar("status", "--json", "--expr", "par", check=True).stdout)["noninteractive"] is False
    assert "Follows: par" in project.ar("report", check=True).stdout

    # the child's first run gets the parent checkpoint and ends the non-interactive re-entry
    result = run_value(project, 0.4, slug="kid", note="from the parent's weights")
    log = (kid / "runs" / result["run_id"] / "run.log").read_text()
    assert f"parent {(project.root / parent_ckpt).resolve()}" in log
    assert result["chain_remaining"] == 1 and result["terminated_by"] is None
    assert chain_state(project)["noninteractive_reentry"] is None
    status = json.loads(project.ar("status", "--json", check=True).stdout)
    assert status["noninteractive"] is False
    assert "chain max_n: 1 remaining" in project.ar("status", check=True).stdout


def test_threshold_is_dropped_when_the_target_changes(tmp_path: Path) -> None:
    project = parent_with_best(tmp_path, "--chain-mode", "unlimited", "--threshold", "0.1")
    assert chain_init(project, "flip", "--primary-direction", "max").returncode == 0
    assert settings(project, "flip")["loop"]["threshold"] is None
    assert json.loads((project.root / ".autoresearch" / "flip" / "chain_decision.json").read_text())["threshold_dropped"] is True
    done = chain_init(project, "other", "--primary-metric", "val_acc", "--seconds", "7", "--runner", "{python} -u {train_py}",
                      "--constraints", "none", "--parent-ckpt", "none")
    assert done.returncode == 0, done.stderr
    other = settings(project, "other")
    assert other["loop"]["threshold"] is None and other["loop"]["seconds"] == 7
    assert other["experiment"]["runner"] == "{python} -u {train_py}" and other["experiment"]["constraints"] == []
    assert other["experiment"]["parent_ckpt"] is None and other["experiment"]["primary_metric"] == "val_acc"
    assert chain_init(project, "same", "--primary-direction", "min", "--constraints", "val_loss<=2").returncode == 0
    same = settings(project, "same")
    assert same["loop"]["threshold"] == 0.1 and same["experiment"]["constraints"] == ["val_loss<=2"]
    chain = chain_state(project)
    assert chain["chain_remaining"] is None and chain["chain_trail"] == ["par", "same"]  # unlimited; branches off par
    # positions count links: a grandchild is link 2
    run_value(project, 0.3, slug="same")
    assert chain_init(project, "grand", parent="same").returncode == 0
    assert json.loads((project.root / ".autoresearch" / "grand" / "chain_decision.json").read_text())["position"] == 2
    assert chain_state(project)["chain_trail"] == ["par", "same", "grand"]


# ---------------------------------------------------------------- failures leave nothing behind


def test_every_failure_leaves_nothing_behind(tmp_path: Path) -> None:
    root = tmp_path / "proj"
    plain = make_project(root, slug="plain")  # has a best, chain mode disabled
    run_value(plain, 0.8)
    make_project(root, slug="empty")  # no run yet
    project = parent_with_best(root, "--chain-mode", "max_n", "--chain-max", "1")
    project.ar("session", "--expr", "empty", "--chain-mode", "unlimited", check=True)
    before = listing(project)
    cases = [
        (["--new-slug", "Bad Slug"], "not allowed"),
        (["--from-expr", "nope"], "no experiment 'nope'"),
        (["--from-expr", "empty"], "no best run"),
        (["--rationale", "  \n "], "--rationale is empty"),
        (["--rationale", ""], "--rationale is empty"),
        (["--parent-ckpt", "no/such/ckpt.pt"], "does not exist"),
        (["--new-slug", "empty"], "already exists"),
        (["--new-slug", "par"], "already exists"),
        (["--primary-direction", "up"], "not min or max"),
        (["--constraints", "mem<<3"], "mem<<3"),
        (["--constraints", "inherit", "--constraints", "mem<=3"], "cannot be mixed"),
        (["--seconds", "soon"], "not a whole number"),
        (["--seconds", "0"], "out of range"),
        (["--runner", " "], "--runner is empty"),
        (["--goal", ""], "--goal is empty"),
        (["--primary-metric", ""], "--primary-metric is empty"),
        (["--from-expr", "plain"], "chain mode is disabled"),
    ]
    for args, words in cases:
        base = [x for k, v in (("--from-expr", "par"), ("--new-slug", "kid"), ("--rationale", "because")) if k not in args for x in (k, v)]
        assert_refused(project.ar("chain-init", *base, *args), words)
        assert listing(project) == before, args
    # the budget: one link, then none
    assert chain_init(project, "kid").returncode == 0
    before = listing(project)
    assert_refused(chain_init(project, "kid2"), "budget is spent")
    assert_refused(chain_init(project, "kid2", parent="kid"), "budget is spent")
    assert listing(project) == before
    project.ar("session", "--expr", "kid", "--chain-mode", "disabled", check=True)
    before = listing(project)
    assert chain_state(project)["chain_mode"] == "disabled"
    assert_refused(chain_init(project, "kid2", parent="kid"), "chain mode is disabled")
    assert listing(project) == before


@pytest.mark.parametrize("point", ["chain_before_rename", "chain_after_rename"])
def test_retry_after_a_kill_completes_with_the_same_arguments(tmp_path: Path, point: str) -> None:
    project = parent_with_best(tmp_path, "--chain-mode", "max_n", "--chain-max", "2")
    before = chain_state(project)
    killed = chain_init(project, "kid", env=clean_env(AR_CRASH_AT=point))
    assert killed.returncode == -9
    assert chain_state(project) == before  # killed before the chain-session update
    assert (project.root / ".autoresearch" / "kid").exists() == (point == "chain_after_rename")
    again = chain_init(project, "kid")
    assert again.returncode == 0 and again.stdout == "kid\n", again.stderr
    chain = chain_state(project)
    assert chain["current_slug"] == "kid" and chain["chain_trail"] == ["par", "kid"] and chain["chain_remaining"] == 1
    names = sorted(p.name for p in (project.root / ".autoresearch").iterdir())
    assert names == [".chain-session.json", ".gitignore", "ar.py", "kid", "par"]  # no staging left
    # once complete, the same call is a no-op (no second decrement); other arguments are refused
    assert chain_init(project, "kid").stdout == "kid\n"
    assert chain_state(project) == chain
    assert_refused(chain_init(project, "kid", rationale="another reason"), "already exists")
    assert chain_state(project) == chain


# ---------------------------------------------------------------- the chain budget


def test_session_sets_the_chain_budget(tmp_path: Path) -> None:
    project = parent_with_best(tmp_path)
    assert chain_state(project)["chain_mode"] == "disabled"
    project.ar("session", "--chain-mode", "max_n", "--chain-max", "3", check=True)
    assert chain_state(project)["chain_remaining"] == 3
    project.ar("session", "--chain-mode", "max_n", "--chain-max", "3", check=True)  # the skill persisting its answers again
    assert chain_state(project)["chain_remaining"] == 3
    assert chain_init(project, "kid").returncode == 0
    assert chain_state(project)["chain_remaining"] == 2
    project.ar("session", "--chain-max", "5", check=True)  # two more links
    assert chain_state(project)["chain_remaining"] == 4
    project.ar("session", "--chain-mode", "unlimited", check=True)
    assert chain_state(project)["chain_mode"] == "unlimited" and chain_state(project)["chain_remaining"] is None
    assert "chain unlimited" in project.ar("status", check=True).stdout
    # an experiment off the trail keeps its setting for a chain started from it; `ar init` starts a new scope
    make_project(project.root, slug="fresh")
    assert chain_state(project)["chain_trail"] == ["fresh"] and chain_state(project)["chain_mode"] == "disabled"


def test_chain_budget_terminates_the_last_link(tmp_path: Path) -> None:
    project = parent_with_best(tmp_path, "--chain-mode", "max_n", "--chain-max", "1", "--max-runs", "3")
    assert project.result("r0003")["terminated_by"] == "max_runs"  # a link is left: the parent's own limit
    assert project.result("r0003")["chain_remaining"] == 1
    assert chain_init(project, "kid", "--parent-ckpt", ".autoresearch/par/best_ckpt").returncode == 0
    first = run_value(project, 0.45, slug="kid")
    assert first["chain_remaining"] == 0 and first["should_terminate"] is False
    run_value(project, 0.46, slug="kid")
    last = run_value(project, 0.44, slug="kid")
    assert last["should_terminate"] is True and last["terminated_by"] == "chain_budget" and last["chain_remaining"] == 0
    refused = project.ar("run", "--expr", "kid")
    assert refused.returncode == 4 and "has terminated (chain_budget)" in refused.stderr
    status = json.loads(project.ar("status", "--json", check=True).stdout)
    assert status["terminated_by"] == "chain_budget" and status["chain_remaining"] == 0
    assert "TERMINATED by chain_budget" in project.ar("status", check=True).stdout


@pytest.mark.parametrize(
    "stop, mode, remaining, expected",
    [
        (None, "max_n", 0, None),  # still running: nothing to end
        ("max_runs", "max_n", 0, "chain_budget"),
        ("plateau", "max_n", 0, "chain_budget"),
        ("primary_threshold", "max_n", 0, "chain_budget"),
        ("max_runs", "max_n", 1, "max_runs"),  # a link is left: the agent chains on
        ("max_runs", "unlimited", None, "max_runs"),
        ("max_runs", "disabled", None, "max_runs"),
        ("plateau", "disabled", 0, "plateau"),
        ("manual", "max_n", 0, "manual"),  # the user interrupted: resume, not a finished chain
        ("consecutive_failures", "max_n", 0, "consecutive_failures"),  # a broken environment: fix it
    ],
)
def test_chain_budget_rule(stop, mode, remaining, expected) -> None:
    assert with_chain(stop, mode, remaining) == expected
