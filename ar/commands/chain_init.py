"""`ar chain-init`: create the follow-up experiment of a chain (SPEC §7).

Everything is validated before anything is created; the child is built in a staging directory
and renamed into place (atomic); then .chain-session.json is updated (atomic). A kill between
the rename and that update is completed by a retry with the same arguments: the child's
chain_decision.json records a digest of the request it was built from.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import NamedTuple

import orjson

from ar import chain, results_log
from ar.best import load_best
from ar.constraints import parse_constraint
from ar.durable import read_json_or_none, sha256, sha256_file, write_bytes_atomic, dump_json
from ar.errors import ArError
from ar.experiments import resolve_experiment
from ar.faults import crash_point
from ar.text import utc_time
from ar.layout import ExperimentPaths, ProjectPaths, check_slug
from ar.settings import Loop, Session, load_session, save_session
from ar.slots import idle_books
from ar.state import LoopState, load_state, save_state

INHERIT = "inherit"
NONE = "none"
STAGING = ".chain-"  # .autoresearch/.chain-<slug>-<pid>: the child while it is being built


class ChainRequest(NamedTuple):
    """The flags as given (None / 'inherit': take the parent's)."""

    from_expr: str | None
    new_slug: str | None
    goal: str | None
    parent_ckpt: str | None
    mutation_scope: str | None
    primary_metric: str | None
    primary_direction: str | None
    rationale: str | None
    runner: str
    seconds: str
    constraints: tuple[str, ...]


class Link(NamedTuple):
    """The chain scope after this link: what .chain-session.json will say."""

    mode: str
    remaining: int | None
    trail: list


def chain_init_command(cwd: Path, request: ChainRequest) -> str:
    if request.rationale is None or not request.rationale.strip():
        raise ArError("--rationale is empty", "say why this follow-up experiment, from what the parent's `ar report` shows")
    if request.new_slug is None:
        raise ArError("--new-slug is missing", "name the follow-up experiment, e.g. --new-slug 261123-finetune")
    parent = resolve_experiment(request.from_expr)
    project = ProjectPaths(parent.root)
    child = project.experiment(check_slug(request.new_slug))
    request = request._replace(from_expr=parent.slug)
    digest = sha256(orjson.dumps(list(request))).hexdigest()
    with idle_books(parent):  # the parent's best must not move while we copy it
        with chain.locked(project):
            scope = chain.normalized(chain.read_raw(project))
            if child.dir.exists():
                return _retry(project, parent, child, digest, scope)
            session, link, decision = _validate(cwd, project, parent, child, request, scope)
            _build(project, parent, child, session, {**decision, "request_sha256": digest})
            crash_point("chain_after_rename")
            _enter(project, child.slug, link)
    return child.slug


def _retry(project: ProjectPaths, parent: ExperimentPaths, child: ExperimentPaths, digest: str, scope: dict) -> str:
    """The child exists: finish an earlier chain-init with the same arguments, else refuse."""
    decision = read_json_or_none(child.chain_decision)
    if not isinstance(decision, dict) or decision.get("request_sha256") != digest:
        raise ArError(f"experiment '{child.slug}' already exists ({child.dir})", "choose another --new-slug")
    if child.slug not in scope["chain_trail"]:  # killed after the rename, before the chain-session update
        _enter(project, child.slug, _link(scope, parent, load_session(parent).loop, child.slug))
    return child.slug


def _link(scope: dict, parent: ExperimentPaths, loop: Loop, child: str) -> Link:
    mode, remaining = chain.budget_in(scope, parent.slug, loop)
    if mode == "disabled":
        raise ArError(
            f"chain mode is disabled for '{parent.slug}'",
            "allow follow-up experiments with `ar session --chain-mode max_n --chain-max N` or `--chain-mode unlimited`",
        )
    if remaining is not None:
        if remaining <= 0:
            raise ArError("the chain's budget is spent (max_n: 0 follow-up experiments left)", "raise it with `ar session --chain-max N`, or stop here")
        remaining -= 1
    trail = scope["chain_trail"]
    trail = trail[: trail.index(parent.slug) + 1] if parent.slug in trail else [parent.slug]
    return Link(mode, remaining, [*trail, child])


def _enter(project: ProjectPaths, slug: str, link: Link) -> None:
    data = chain.read_raw(project)
    data.update(
        current_slug=slug, chain_mode=link.mode, chain_remaining=link.remaining, chain_trail=link.trail, **{chain.REENTRY: slug}
    )
    chain.save(project, data)


def _validate(cwd: Path, project: ProjectPaths, parent: ExperimentPaths, child: ExperimentPaths, r: ChainRequest, scope: dict):
    """Every check before anything is created: (the child's session, the chain link, chain_decision)."""
    from ar.commands.init import _validate as validate_settings

    psession = load_session(parent)
    pexp, ploop = psession.experiment, psession.loop
    link = _link(scope, parent, ploop, child.slug)
    best = load_best(parent)
    if best is None:
        raise ArError(f"'{parent.slug}' has no best run yet", "run it until a run advances, then chain from it")
    if not parent.run(best["run_id"]).train_py.is_file():
        raise ArError(f"the best run's train.py is missing ({parent.relative(parent.run(best['run_id']).train_py)})", "run `ar status --expr " + parent.slug + "` to repair it")
    for name, digest in pexp.protected.items():
        if not (parent.dir / name).is_file() or sha256_file(parent.dir / name) != digest:
            raise ArError(f"{name} of '{parent.slug}' changed since `ar init`", f"restore {parent.relative(parent.dir / name)} first")
    for flag, value in (("goal", r.goal), ("mutation-scope", r.mutation_scope), ("primary-metric", r.primary_metric)):
        if value is not None and not value.strip():
            raise ArError(f"--{flag} is empty", f"omit --{flag} to keep the parent's")
    goal = pexp.goal if r.goal is None else r.goal
    metric = pexp.primary_metric if r.primary_metric is None else r.primary_metric
    direction = pexp.primary_direction if r.primary_direction is None else r.primary_direction
    runner = pexp.runner if r.runner == INHERIT else r.runner
    seconds = ploop.seconds if r.seconds == INHERIT else _whole_number(r.seconds)
    validate_settings(goal, metric, direction, runner, seconds, pexp.metric_backend, pexp.log_pattern)
    experiment = pexp._replace(
        slug=child.slug,
        goal=goal,
        primary_metric=metric,
        primary_direction=direction,
        runner=runner,
        constraints=_constraints(r.constraints, pexp.constraints),
        mutation_scope=pexp.mutation_scope if r.mutation_scope is None else r.mutation_scope,
        parent_slug=parent.slug,
        parent_ckpt=_parent_ckpt(cwd, project, parent, best, r.parent_ckpt),
        created_at=utc_time(),
        protected={},
    )
    same_target = (metric, direction) == (pexp.primary_metric, pexp.primary_direction)
    loop = ploop._replace(
        seconds=seconds,
        threshold=ploop.threshold if same_target else None,  # a target of another metric means nothing here
        chain_mode=link.mode,
        resume="continue",
    )
    from ar.commands.report import collect, render

    state = load_state(parent)
    prior = read_json_or_none(parent.chain_decision)
    position = prior["position"] + 1 if isinstance(prior, dict) and type(prior.get("position")) is int else 1
    decision = {
        "slug": child.slug,
        "position": position,
        "rationale": r.rationale,
        "parent_slug": parent.slug,
        "parent_primary": {"name": pexp.primary_metric, "direction": pexp.primary_direction},
        "parent_best": {"run_id": best["run_id"], "value": best["value"]},
        "parent_baseline": state.baseline,
        "parent_runs": state.runs,
        "parent_report_sha256": sha256((render(collect(parent)) + "\n").encode()).hexdigest(),  # what `ar report` printed
        "parent_ckpt": experiment.parent_ckpt,
        "threshold_dropped": ploop.threshold is not None and not same_target,
        "chain_mode": link.mode,
        "chain_remaining": link.remaining,
        "created_at": experiment.created_at,
    }
    return Session(experiment, loop), link, decision


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ArError(f"--seconds {text!r} is not a whole number", "give seconds per run, or --seconds inherit") from None


def _constraints(given: tuple[str, ...], inherited: tuple[str, ...]) -> tuple[str, ...]:
    if given == (INHERIT,):
        return tuple(inherited)
    if given == (NONE,):
        return ()
    if INHERIT in given or NONE in given:
        raise ArError("--constraints inherit/none cannot be mixed with constraints", "give either inherit, none, or the constraints")
    return tuple(str(parse_constraint(c)) for c in given)


def _parent_ckpt(cwd: Path, project: ProjectPaths, parent: ExperimentPaths, best: dict, given: str | None) -> str | None:
    """The checkpoint every run of the child gets (AR_PARENT_CKPT), relative to the project root."""
    if given == NONE:
        return None
    if given is None:
        recorded = best.get("checkpoint")
        if not recorded:
            return None  # the parent keeps no checkpoints: the child starts from train.py alone
        path = parent.dir / str(recorded)
        if not path.exists():
            raise ArError(
                f"the parent's best checkpoint {parent.relative(path)} is missing",
                "pass --parent-ckpt PATH (or --parent-ckpt none to start without one)",
            )
    else:
        if not given.strip():
            raise ArError("--parent-ckpt is empty", "give a checkpoint path, or omit it for the parent's best checkpoint")
        path = cwd / os.path.expanduser(given)
        if not path.exists():
            raise ArError(f"--parent-ckpt {given} does not exist", "give an existing checkpoint file or directory (relative to the current directory)")
    return os.path.relpath(os.path.abspath(path), project.root)


def _build(project: ProjectPaths, parent: ExperimentPaths, child: ExperimentPaths, session: Session, decision: dict) -> None:
    for stale in project.state_dir.glob(f"{STAGING}{child.slug}-*"):  # left by a killed attempt
        shutil.rmtree(stale, ignore_errors=True)
    staged = ExperimentPaths(project.root, child.slug, project.state_dir / f"{STAGING}{child.slug}-{os.getpid()}")
    try:
        _write_child(parent, staged, session, decision)
        crash_point("chain_before_rename")
        os.rename(staged.dir, child.dir)  # the child appears whole or not at all
    except BaseException:
        shutil.rmtree(staged.dir, ignore_errors=True)
        raise
    from ar.seal import seal

    seal(child)  # from its first moment, only train.py may change


def _write_child(parent: ExperimentPaths, staged: ExperimentPaths, session: Session, decision: dict) -> None:
    from ar.render import render

    e, loop = session.experiment, session.loop
    staged.dir.mkdir()
    staged.runs.mkdir()
    program = render(
        "program.md",
        {
            "SLUG": e.slug,
            "GOAL": e.goal.strip(),
            "METRIC": e.primary_metric,
            "DIRECTION": e.primary_direction,
            "BACKEND": e.metric_backend,
            "CONSTRAINTS": ", ".join(e.constraints) or "none",
            "SCOPE": e.mutation_scope,
            "RUNNER": e.runner,
            "SECONDS": str(loop.seconds),
        },
    )
    best = decision["parent_best"]
    program += (
        f"\n## Chain\nFollows `{parent.slug}` (link {decision['position']}): train.py starts from its best run "
        f"{best['run_id']} ({decision['parent_primary']['name']}={best['value']}).\n"
        + (f"Every run gets the parent checkpoint `{e.parent_ckpt}` as AR_PARENT_CKPT.\n" if e.parent_ckpt else "")
        + f"Rationale (chain_decision.json):\n{decision['rationale'].strip()}\n"
    )
    staged.program_md.write_text(program, encoding="utf-8")
    shutil.copyfile(parent.prepare_py, staged.prepare_py)  # the data/metric contract, custom extraction included
    train = parent.run(best["run_id"]).train_py.read_bytes()
    staged.train_py.write_bytes(train)
    staged.baseline_py.write_bytes(train)
    results_log.create(staged.results)
    save_state(staged, LoopState())
    protected = {p.name: sha256_file(p) for p in (staged.prepare_py, staged.program_md)}
    save_session(staged.session, session._replace(experiment=e._replace(protected=protected)))
    write_bytes_atomic(staged.chain_decision, dump_json(decision), mode=0o444)
    os.chmod(staged.chain_decision, 0o444)  # an audit record: not edited afterwards
