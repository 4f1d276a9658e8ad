"""Environments for tests that train with real host libraries (torch, later transformers and
friends), built once per machine outside the repository and outside the lock.

These libraries stay out of uv.lock: a user runs the demo and the plugin without them, and the
lock resolves from the public index on any machine. A test session asks for one with
`stack_python("torch", ["torch==2.13.0"])`: a venv under the user cache directory, keyed by its
requirements and Python version, built with `uv venv` + `uv pip install`, reused while it is
complete. Where pip is configured with a folder of local wheels (`PIP_FIND_LINKS`, as on our
machines, which carry a CPU build of torch there), wheels in it are used first and the venv is
made for the Python they were built for; elsewhere everything comes from the user's own index
(`UV_INDEX_URL` and friends apply: point it at a CPU-only index to avoid a CUDA build of torch).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def cache_root() -> Path:
    """Where test downloads and environments live: never inside the repository tree, so a copy
    of the tree (a plugin install from a local path) never carries them."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "autoresearch-tests"


def local_wheels() -> list[Path]:
    wheels = []
    for folder in os.environ.get("PIP_FIND_LINKS", "").split():
        if os.path.isdir(folder):
            wheels += sorted(Path(folder).glob("*.whl"))
    return wheels


def _pinned_local_wheel(requirement: str, wheels: list[Path]) -> Path | None:
    """The local wheel satisfying `name==version` (a local label such as +cpu allowed)."""
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][0-9.]*)", requirement)
    if not match:
        return None
    name, version = match.group(1).replace("-", "_").lower(), match.group(2)
    for wheel in wheels:
        parts = wheel.name.split("-")
        if parts[0].lower() == name and (parts[1] == version or parts[1].startswith(version + "+")):
            return wheel
    return None


def _python_for(wheels: list[Path]) -> str:
    """The interpreter the env is made with: the one a CPython-specific local wheel was built for."""
    tags = {w.name.split("-")[-3] for w in wheels if re.fullmatch(r"cp3\d+", w.name.split("-")[-3])}
    if len(tags) == 1:
        tag = tags.pop()
        return f"3.{tag[3:]}"
    return sys.executable


def _run(args: list[str], log: Path) -> None:
    with open(log, "a") as out:
        out.write("$ " + " ".join(args) + "\n")
        out.flush()
        done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(args[:4])} ...` failed (exit {done.returncode}); see {log}")


def build(name: str, requirements: list[str], compile_bytecode: bool = False) -> Path:
    """The python of a complete environment holding `requirements` (built on first use).
    `compile_bytecode`: heavy stacks compiled once at install, since a process that may not write
    .pyc files (PYTHONDONTWRITEBYTECODE, as here) compiles every import again: 10 s for lightning."""
    uv = shutil.which("uv")
    if uv is None:
        raise RuntimeError("uv is not on PATH")
    wheels = local_wheels()
    pinned = {r: _pinned_local_wheel(r, wheels) for r in requirements}
    python = _python_for([w for w in pinned.values() if w])
    key = hashlib.sha256(repr((requirements, python, [str(w) for w in pinned.values()], compile_bytecode)).encode()).hexdigest()[:12]
    env = cache_root() / "envs" / f"{name}-{key}"
    done_mark = env / ".complete"
    exe = env / "bin" / "python"
    if done_mark.exists() and os.access(exe, os.X_OK):
        return exe
    env.parent.mkdir(parents=True, exist_ok=True)
    with open(env.parent / f"{name}-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder per env (parallel pytest sessions)
        if done_mark.exists() and os.access(exe, os.X_OK):
            return exe
        shutil.rmtree(env, ignore_errors=True)
        log = env.parent / f"{name}-{key}.log"
        log.write_text("")
        _run([uv, "venv", "--quiet", "--python", python, str(env)], log)
        install = [str(w) if w else r for r, w in pinned.items()]
        _run([uv, "pip", "install", "--quiet", *(["--compile-bytecode"] if compile_bytecode else []), "--python", str(exe), *install], log)
        done_mark.write_text("\n".join(requirements) + "\n")
    return exe


def stack_python(name: str, requirements: list[str], compile_bytecode: bool = False) -> Path:
    """build(), or skip the calling test with the reason (fail instead under CI, where a missing
    environment must not pass unnoticed)."""
    try:
        return build(name, requirements, compile_bytecode)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"the {name} test environment could not be built: {exc}")
        pytest.skip(f"the {name} test environment could not be built: {exc}")
