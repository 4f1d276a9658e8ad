"""The chain scope, .autoresearch/.chain-session.json (SPEC §3, §7).

One chain per project at a time:

    {
      "current_slug": "b",              the experiment commands act on without --expr
      "chain_mode": "max_n",            disabled | max_n | unlimited
      "chain_remaining": 1,             follow-up experiments left (max_n); null: unlimited / not in use
      "chain_trail": ["a", "b"],        the experiments of this chain, oldest first
      "noninteractive_reentry": "b"     the next skill entry for this slug runs non-interactively
    }                                   (as with AR_NONINTERACTIVE=1); cleared by its first `ar run`

Written by `ar init` (a new trail), `ar session --chain-mode/--chain-max` (the budget),
`ar chain-init` (a new link) and `ar run` (consumes the re-entry mark); always atomically and
under a flock on .autoresearch/ itself, so no lock file is left behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from ar.durable import read_json_or_none, write_json_atomic
from ar.layout import ExperimentPaths, ProjectPaths

MODES = ("disabled", "max_n", "unlimited")
REENTRY = "noninteractive_reentry"


def read_raw(project: ProjectPaths) -> dict:
    data = read_json_or_none(project.chain_session)
    return data if isinstance(data, dict) else {}


def normalized(data: dict) -> dict:
    """The fields with their types checked (a damaged value reads as its default)."""
    trail = data.get("chain_trail")
    mode = data.get("chain_mode")
    remaining = data.get("chain_remaining")
    return {
        "current_slug": data.get("current_slug") if isinstance(data.get("current_slug"), str) else None,
        "chain_mode": mode if mode in MODES else "disabled",
        "chain_remaining": remaining if type(remaining) is int and remaining >= 0 else None,
        "chain_trail": [s for s in trail if isinstance(s, str)] if isinstance(trail, list) else [],
        REENTRY: data.get(REENTRY) if isinstance(data.get(REENTRY), str) else None,
    }


@contextmanager
def locked(project: ProjectPaths) -> Iterator[None]:
    """Serialises read-modify-write of .chain-session.json (the kernel drops it if we die)."""
    fd = os.open(project.state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def save(project: ProjectPaths, data: dict) -> None:
    write_json_atomic(project.chain_session, data)


def budget(paths: ExperimentPaths, loop) -> tuple[str, int | None]:
    """(chain mode, links left) as seen from this experiment: the chain scope's when the experiment
    is on the current trail, else what a chain started from it would have (its own settings)."""
    return budget_in(normalized(read_raw(ProjectPaths(paths.root))), paths.slug, loop)


def budget_in(scope: dict, slug: str, loop) -> tuple[str, int | None]:
    if slug in scope["chain_trail"]:
        mode = scope["chain_mode"]
        remaining = scope["chain_remaining"]
        if mode == "max_n" and remaining is None:
            remaining = loop.chain_max
        return mode, remaining if mode == "max_n" else None
    return loop.chain_mode, loop.chain_max if loop.chain_mode == "max_n" else None


def noninteractive(paths: ExperimentPaths) -> bool:
    return read_raw(ProjectPaths(paths.root)).get(REENTRY) == paths.slug


def consume_reentry(paths: ExperimentPaths) -> None:
    """The child's first `ar run`: the non-interactive re-entry has happened. One small read when
    there is nothing to do."""
    project = ProjectPaths(paths.root)
    if read_raw(project).get(REENTRY) != paths.slug:
        return
    with locked(project):
        data = read_raw(project)
        if data.get(REENTRY) == paths.slug:
            data[REENTRY] = None
            save(project, data)


def sync_session(paths: ExperimentPaths, old, new) -> None:
    """`ar session --chain-mode/--chain-max` on an experiment of the current trail sets the chain's
    budget: max_n starts with chain_max links left unless a max_n budget is already running (then a
    changed chain_max moves what is left by the difference, never below 0); unlimited and
    disabled leave no count. Experiments off the trail keep the setting for a chain started from them."""
    project = ProjectPaths(paths.root)
    with locked(project):
        data = read_raw(project)
        scope = normalized(data)
        if paths.slug not in scope["chain_trail"]:
            return
        remaining = None
        if new.chain_mode == "max_n":
            remaining = scope["chain_remaining"]
            if scope["chain_mode"] != "max_n" or remaining is None:
                remaining = new.chain_max
            elif old.chain_max is not None and new.chain_max != old.chain_max:
                remaining = max(0, remaining + new.chain_max - old.chain_max)
        if (scope["chain_mode"], scope["chain_remaining"]) != (new.chain_mode, remaining):
            data.update(chain_mode=new.chain_mode, chain_remaining=remaining)
            save(project, data)
