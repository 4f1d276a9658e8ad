"""Which experiment a command acts on: --expr, else the current one (.chain-session.json)."""

from __future__ import annotations

from ar.durable import read_json_or_none, write_json_atomic
from ar.errors import ArError
from ar.layout import ExperimentPaths, ProjectPaths, find_project


def resolve_experiment(expr: str | None) -> ExperimentPaths:
    project = find_project()
    if expr:
        paths = project.experiment(expr)
        if not paths.session.exists():
            raise ArError(f"no experiment '{expr}' in {project.state_dir}", _choices(project))
        return paths
    current = (read_json_or_none(project.chain_session) or {}).get("current_slug")
    if isinstance(current, str) and current in project.experiments():
        return project.experiment(current)
    slugs = project.experiments()
    if not slugs:
        raise ArError(f"no experiment in {project.state_dir}", "create one with `ar init`")
    # the most recently created one: what a user who just ran `ar init` means
    return max((project.experiment(s) for s in slugs), key=lambda p: p.session.stat().st_mtime)


def _choices(project: ProjectPaths) -> str:
    slugs = project.experiments()
    return f"pass --expr with one of: {', '.join(slugs[:10])}" if slugs else "create one with `ar init`"


def set_current(project: ProjectPaths, slug: str) -> None:
    session = read_json_or_none(project.chain_session)
    if not isinstance(session, dict):
        session = {}
    session.update(current_slug=slug)
    session.setdefault("chain_mode", "disabled")
    session.setdefault("chain_remaining", None)
    session.setdefault("chain_trail", [])
    if slug not in session["chain_trail"]:
        # a new experiment outside a chain starts a new chain scope, with its own settings (disabled)
        session.update(chain_trail=[slug], chain_mode="disabled", chain_remaining=None, noninteractive_reentry=None)
    write_json_atomic(project.chain_session, session)
