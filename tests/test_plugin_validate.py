"""Claude Code's own validator accepts the plugin and its marketplace (offline, pinned version)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
from claude_harness import CLAUDE_VERSION, REPO, claude_env, install_claude


@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", [".", ".claude-plugin/plugin.json"])
def test_claude_plugin_validate_strict(target: str) -> None:
    exe = install_claude()
    with tempfile.TemporaryDirectory(prefix="claude-home-") as home:
        done = subprocess.run([str(exe), "plugin", "validate", "--strict", target], cwd=REPO, env=claude_env(Path(home)),
                              capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, (f"claude {CLAUDE_VERSION} `plugin validate --strict {target}` exited {done.returncode}:\n"
                                  f"{done.stdout[-4000:]}\n{done.stderr[-2000:]}")
