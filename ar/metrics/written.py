"""Files a run wrote, found by a glob: the event files, trainer_state.json and metrics.csv the
file-reading backends take (SPEC §5.3: only files written during this run count)."""

from __future__ import annotations

import stat
from pathlib import Path

from ar.layout import split_glob


def files_written_since(root: Path, pattern: str, run_dir: Path, started: float) -> list[Path]:
    """Files matching `pattern` (relative to the project root `root`; `{run_dir}` is replaced by the
    run directory, absolute or relative) that were written during this run: modified at or after `started`
    (epoch seconds). `**` recursive. Oldest first (by mtime)."""
    base, rest = split_glob(Path(root), pattern, run_dir)
    found: dict[Path, float] = {}
    for path in base.glob(rest) if rest else [base]:
        try:
            st = path.stat()
        except OSError:  # gone since the listing, or a dangling link
            continue
        if st.st_mtime >= started and stat.S_ISREG(st.st_mode):
            found[path] = st.st_mtime
    return sorted(found, key=lambda path: (found[path], path))
