"""The shim `.autoresearch/ar.py` that agents call: written by `ar init`, rewritten by `ar shim`,
and rewritten by itself (through `AR_SHIM_HEAL`) when the interpreter it named was gone."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ar.durable import write_bytes_atomic
from ar.layout import ProjectPaths
from ar.render import render

SOURCE = Path(__file__).resolve().parent.parent  # a clone or plugin install; site-packages for a tool install


def write_shim(project: ProjectPaths) -> None:
    """Points the shim at this interpreter (no write when it already does)."""
    text = render("shim.py", {"AR_PYTHON": repr(sys.executable), "AR_SOURCE": repr(str(SOURCE))}).encode()
    try:
        if project.shim.read_bytes() == text:
            return
    except OSError:
        pass
    write_bytes_atomic(project.shim, text, mode=0o755)


def heal_shim() -> None:
    """Called at start-up when the shim had to look for the runtime: record where it found it."""
    root = os.environ.get("AR_PROJECT_ROOT")
    if root and Path(root, ".autoresearch").is_dir():
        try:
            write_shim(ProjectPaths(Path(root)))
        except OSError:
            pass  # a read-only project still runs; the shim keeps looking next time
