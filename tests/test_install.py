"""Installs as a user's machine would: from a fresh copy of the repository, with nothing from our
machines (the local wheel folder is hidden), on Python 3.11, 3.12 and 3.13, and as a tool
install whose only executable is `autoresearch`; the shim finds a moved install again."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, clean_env
from stack_env import local_wheels

UV = shutil.which("uv")
pytestmark = pytest.mark.skipif(UV is None, reason="uv is not on PATH")


def tracked_files(repo: Path = REPO) -> list[str]:
    """What a clone of the working tree holds: tracked files plus new ones git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout
    return sorted(name for name in out.decode().split("\0") if name and (repo / name).is_file())


def copy_tree(dest: Path) -> Path:
    for name in tracked_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_tree(tmp_path_factory.mktemp("clone") / "autoresearch")


def find_python(version: str) -> str:
    """An interpreter of this minor version that runs; under CI a missing one fails the test."""
    candidates = [shutil.which(f"python{version}")]
    pyenv = shutil.which("pyenv")
    if pyenv:
        root = subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        candidates += sorted(glob.glob(os.path.join(root, "versions", f"{version}.*", "bin", f"python{version}")), reverse=True)
    for python in filter(None, candidates):
        if subprocess.run([python, "-c", "pass"], capture_output=True).returncode == 0:
            return python
    found = subprocess.run([UV, "python", "find", version], capture_output=True, text=True)
    if found.returncode == 0:
        return found.stdout.strip()
    (pytest.fail if os.environ.get("CI") else pytest.skip)(f"no Python {version} on this machine")


def hidden_wheel_folders(argv: list[str]) -> list[str]:
    """argv run in a private mount namespace where pip's local wheel folders are empty, as on a
    machine that never had them; argv unchanged where there are none."""
    folders = sorted({str(w.parent) for w in local_wheels()})
    if not folders:
        return argv
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("hiding the local wheel folder needs root and unshare")
    empty = Path(os.environ.get("TMPDIR", "/tmp"), "ar-empty-wheels")
    empty.mkdir(exist_ok=True)
    mounts = " && ".join(f"mount --bind {empty} {folder}" for folder in folders)
    return ["unshare", "-m", "sh", "-c", f'{mounts} && exec "$@"', "sh", *argv]


def test_the_lock_names_nothing_but_the_public_index() -> None:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    for package in lock["package"]:
        source = package["source"]
        assert source in ({"registry": "https://pypi.org/simple"}, {"editable": "."}), (package["name"], source)
        for dist in [*package.get("wheels", []), *([package["sdist"]] if "sdist" in package else [])]:
            assert dist["url"].startswith("https://files.pythonhosted.org/"), (package["name"], dist["url"])
    names = {p["name"] for p in lock["package"]}
    assert not names & {"torch", "transformers", "lightning"}, "heavy host libraries stay out of the lock"
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    uv_settings = pyproject.get("tool", {}).get("uv", {})
    assert "find-links" not in uv_settings and not uv_settings.get("compile-bytecode")


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13"])
def test_fresh_clone_installs_and_runs_the_demo_without_local_wheels(clone: Path, tmp_path: Path, version: str) -> None:
    """The README's set-up on each Python: everything resolves from the public index (dev group
    included), the demo needs no torch, and no executable is called `ar`."""
    python = find_python(version)
    venv = tmp_path / "venv"
    env = {**user_env(Path.home()), "UV_PROJECT_ENVIRONMENT": str(venv)}
    sync = subprocess.run(hidden_wheel_folders([UV, "sync", "--locked", "--quiet", "--python", python]), cwd=clone, env=env,
                          capture_output=True, text=True, timeout=600)
    assert sync.returncode == 0, sync.stderr
    assert (venv / "bin" / "autoresearch").exists() and not (venv / "bin" / "ar").exists()
    demo = subprocess.run(hidden_wheel_folders([UV, "run", "--locked", "--no-dev", "--python", python, "autoresearch", "demo",
                                                "--dir", str(tmp_path / "demo")]),
                          cwd=clone, env=env, capture_output=True, text=True, timeout=300)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "verdict ok/advance" in demo.stdout and "verdict crash/crash" in demo.stdout
    torch = subprocess.run([str(venv / "bin" / "python"), "-c", "import torch"], capture_output=True)
    assert torch.returncode != 0, "the demo environment must not need torch"


def user_env(home: Path) -> dict[str, str]:
    """A user's shell: their own HOME, no virtualenv active, no uv settings of this test session."""
    env = {k: v for k, v in clean_env().items() if k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}
    env["HOME"] = str(home)
    return env


def shim_status(project: Path, env: dict[str, str], python: str = sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, ".autoresearch/ar.py", "status", "--compact"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def recorded_python(project: Path) -> str:
    line = next(line for line in (project / ".autoresearch" / "ar.py").read_text().splitlines() if line.startswith("AR_PYTHON = "))
    return line.split("=", 1)[1].split("#")[0].strip().strip("'\"")


def init_args(slug: str = "exp") -> list[str]:
    return ["init", "--example", "--expr", slug, "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min"]


def test_tool_install_names_only_autoresearch_and_the_shim_follows_a_reinstall(clone: Path, tmp_path: Path, bare_python: Path) -> None:
    """`uv tool install` puts one executable on PATH (never `ar`: binutils keeps it). When that
    install goes and another takes its place, the shim finds it on PATH and rewrites itself."""
    env = user_env(tmp_path / "home")

    def tool_install(where: str) -> Path:
        paths = {"UV_TOOL_DIR": str(tmp_path / where / "tools"), "UV_TOOL_BIN_DIR": str(tmp_path / where / "bin")}
        done = subprocess.run([UV, "tool", "install", "--quiet", str(clone)], env={**env, **paths}, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
        return Path(paths["UV_TOOL_BIN_DIR"])

    first = tool_install("first")
    assert sorted(os.listdir(first)) == ["autoresearch"]
    version = subprocess.run([str(first / "autoresearch"), "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("autoresearch ")
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([str(first / "autoresearch"), *init_args()], cwd=project, env=env, check=True, capture_output=True)
    assert recorded_python(project).startswith(str(tmp_path / "first" / "tools"))
    assert shim_status(project, env, str(bare_python)).stdout.startswith("expr exp:")

    shutil.rmtree(tmp_path / "first")  # uninstalled; reinstalled elsewhere, on PATH
    second = tool_install("second")
    env["PATH"] = f"{second}{os.pathsep}{env['PATH']}"
    healed = shim_status(project, env, str(bare_python))
    assert healed.returncode == 0 and healed.stdout.startswith("expr exp:"), healed.stderr
    assert recorded_python(project).startswith(str(tmp_path / "second" / "tools"))
    assert shim_status(project, env, str(bare_python)).returncode == 0


def test_shim_of_a_vanished_install_says_how_to_rewrite_it(clone: Path, tmp_path: Path, bare_python: Path) -> None:
    """A moved clone: nothing on PATH or in a plugin cache knows the new place, so the error names
    the command that rewrites the shim, and that command works."""
    env = user_env(tmp_path / "home")
    env["PATH"] = os.pathsep.join(d for d in env["PATH"].split(os.pathsep) if not os.path.exists(os.path.join(d, "autoresearch")))
    source = copy_tree(tmp_path / "old" / "autoresearch")
    venv_env = {**env, "UV_PROJECT_ENVIRONMENT": str(tmp_path / "old" / "venv")}
    subprocess.run([UV, "sync", "--quiet", "--no-dev", "--locked"], cwd=source, env=venv_env, check=True, capture_output=True, timeout=600)
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([str(tmp_path / "old" / "venv" / "bin" / "autoresearch"), *init_args()], cwd=project, env=env, check=True, capture_output=True)
    moved = tmp_path / "new"
    (tmp_path / "old").rename(moved)

    lost = shim_status(project, env, str(bare_python))
    assert lost.returncode == 1 and lost.stdout == ""
    assert lost.stderr.count("\n") == 1 and "cannot find the autoresearch runtime" in lost.stderr
    assert "`autoresearch shim`" in lost.stderr and "uv run --project" in lost.stderr

    done = subprocess.run([UV, "run", "--quiet", "--no-dev", "--project", str(moved / "autoresearch"), "autoresearch", "shim"],
                          cwd=project, env={**env, "UV_PROJECT_ENVIRONMENT": str(moved / "venv2")}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert shim_status(project, env, str(bare_python)).stdout.startswith("expr exp:")
