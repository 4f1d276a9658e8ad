"""The plugin installed as a user installs it: `claude plugin marketplace add <git URL>` and
`claude plugin install`, with the real CLI (pinned), offline. The install holds only tracked
files; the setup skill's call form builds the runtime there; a plugin update moves the shim on.

The git URL is https://127.0.0.1/autoresearch.git, which git (through a throwaway HOME's
`url.<repo>.insteadOf`) maps to a local bare repository of this tree: no traffic leaves the
machine, and Claude Code takes the same path as for a hosted repository (a shallow git clone).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from claude_harness import claude_env, install_claude

from test_install import UV, copy_tree, init_args, recorded_python, shim_status, tracked_files, user_env

URL = "https://127.0.0.1/autoresearch.git"


def git(cwd: Path, *args: str, env: dict | None = None) -> str:
    identity = ["-c", "user.name=t", "-c", "user.email=t@localhost", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def claude(exe: Path, home: Path, *args: str) -> str:
    done = subprocess.run([str(exe), *args], env=claude_env(home), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, f"claude {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return done.stdout


def install_path(home: Path) -> Path:
    plugins = json.loads((home / ".claude" / "plugins" / "installed_plugins.json").read_text())["plugins"]
    (entry,) = plugins["autoresearch@autoresearch"]
    return Path(entry["installPath"])


@pytest.mark.timeout(600)
@pytest.mark.skipif(UV is None, reason="uv is not on PATH")
def test_plugin_from_a_git_url_holds_only_tracked_files_and_runs(tmp_path: Path, bare_python: Path) -> None:
    exe = install_claude()
    work = copy_tree(tmp_path / "work")
    git(work, "init", "-q", "-b", "main")
    git(work, "add", "-A")
    git(work, "commit", "-qm", "snapshot")
    bare = tmp_path / "autoresearch.git"
    git(tmp_path, "clone", "-q", "--bare", str(work), str(bare))
    home = tmp_path / "home"
    home.mkdir()
    git(home, "config", "--global", f"url.file://{bare}.insteadOf", URL, env={**os.environ, "HOME": str(home)})

    claude(exe, home, "plugin", "marketplace", "add", URL)
    claude(exe, home, "plugin", "install", "autoresearch@autoresearch")
    installed = install_path(home)
    files = sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file())
    assert files == tracked_files(work), "the install holds exactly the tracked files"
    assert not (installed / ".venv").exists() and not (installed / ".cache").exists()

    # the setup skill's call form, from a host project, then the shim the agent uses
    env = user_env(home)
    project = tmp_path / "project"
    project.mkdir()
    done = subprocess.run([UV, "run", "--quiet", "--no-dev", "--project", str(installed), "autoresearch", *init_args()],
                          cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout == "exp\n", done.stderr
    assert recorded_python(project).startswith(str(installed))
    assert shim_status(project, env, str(bare_python)).stdout.startswith("expr exp:")

    # a plugin update installs a new version beside the old one: the shim follows the plugin
    # once the new install has its runtime
    manifest = work / ".claude-plugin" / "plugin.json"
    manifest.write_text(manifest.read_text().replace('"version": "0.1.0"', '"version": "0.1.1-test"'))
    git(work, "commit", "-qam", "bump")
    git(work, "push", "-q", str(bare), "HEAD:main")
    claude(exe, home, "plugin", "marketplace", "update", "autoresearch")
    claude(exe, home, "plugin", "update", "autoresearch@autoresearch")
    updated = install_path(home)
    assert updated != installed and updated.name == "0.1.1-test"
    stays = shim_status(project, env, str(bare_python))  # the new install has no runtime yet
    assert stays.returncode == 0 and recorded_python(project).startswith(str(installed)), stays.stderr
    setup_call = subprocess.run([UV, "run", "--quiet", "--no-dev", "--project", str(updated), "autoresearch", "--version"],
                                cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert setup_call.returncode == 0, setup_call.stderr
    followed = shim_status(project, env, str(bare_python))
    assert followed.returncode == 0 and followed.stdout.startswith("expr exp:"), followed.stderr
    assert recorded_python(project).startswith(str(updated))
