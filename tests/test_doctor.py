"""`ar doctor`: real projects, real sentinels and processes, and the shim from a bare environment."""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project

LINE = re.compile(r"(ok|warn|FAIL) ([a-z-]+): (.+)")
CHECKS = ("uv", "python", "project-python", "torch", "gpu", "experiment", "metric-backend", "disk", "sentinels")


def doctor_env(bin_dir: Path | None = None) -> dict[str, str]:
    """uv on PATH (first: bin_dir, for a stand-in nvidia-smi)."""
    uv = shutil.which("uv") or os.environ.get("UV")
    if uv is None:
        pytest.skip("uv is not available")
    env = clean_env()
    env.pop("CONDA_PREFIX", None)
    env["PATH"] = os.pathsep.join([*([str(bin_dir)] if bin_dir else []), os.path.dirname(uv), env.get("PATH", "")])
    return env


def doctor(cwd: Path, python: Path | str = sys.executable, bin_dir: Path | None = None, **env: str) -> tuple[int, list[tuple[str, str, str]]]:
    """Exit code and (level, check, detail) per line; through the shim when python is not ar's."""
    argv = [str(python), "-m", "ar"] if str(python) == sys.executable else [str(python), ".autoresearch/ar.py"]
    done = subprocess.run([*argv, "doctor"], cwd=cwd, env={**doctor_env(bin_dir), **env}, capture_output=True, text=True, timeout=120)
    assert done.stderr == "", done.stderr
    lines = done.stdout.splitlines()
    parsed = [LINE.fullmatch(line) for line in lines]
    assert all(parsed), lines  # every line is `ok|warn|FAIL <check>: <detail>`
    return done.returncode, [m.groups() for m in parsed]


def levels(checks: list[tuple[str, str, str]], name: str) -> list[tuple[str, str]]:
    return [(level, detail) for level, check, detail in checks if check == name]


def has_torch(python: str) -> bool:
    return subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0


def test_healthy_project(project: Project) -> None:
    code, checks = doctor(project.root)
    assert code == 0, checks
    assert [c for _, c, _ in checks] == list(CHECKS)
    assert not [c for c in checks if c[0] == "FAIL"]
    assert levels(checks, "uv")[0][0] == "ok"
    assert levels(checks, "python")[0] == ("ok", f"{sys.version.split()[0]} (ar's interpreter {sys.executable})")
    assert sys.executable in levels(checks, "project-python")[0][1]
    assert levels(checks, "torch")[0][0] == ("ok" if has_torch(sys.executable) else "warn")
    assert levels(checks, "experiment") == [("ok", "exp (val_loss min, backend log); `autoresearch smoke` tries its train.py")]
    assert levels(checks, "metric-backend") == [("ok", "log: no library needed")]
    assert levels(checks, "sentinels") == [("ok", "nothing stale in 1 experiment(s)")]
    assert re.fullmatch(r"[\d.]+ GiB free at .+", levels(checks, "disk")[0][1])


def test_json_output(project: Project) -> None:
    done = subprocess.run([sys.executable, "-m", "ar", "doctor", "--json"], cwd=project.root, env=doctor_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    checks = json.loads(done.stdout)["checks"]
    assert [c["name"] for c in checks] == list(CHECKS)
    assert {c["level"] for c in checks} <= {"ok", "warn", "FAIL"}


def test_outside_a_project_skips_the_experiment_checks(tmp_path: Path) -> None:
    code, checks = doctor(tmp_path)
    assert code == 0, checks
    assert [c for _, c, _ in checks] == ["uv", "python", "project-python", "torch", "gpu", "project", "disk"]
    level, detail = levels(checks, "project")[0]
    assert level == "ok" and "not set up yet" in detail and "skipped" in detail


def fake_nvidia_smi(tmp_path: Path, body: str) -> Path:
    """A bin directory whose nvidia-smi runs the shell `body` (this machine may have no GPU)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvidia-smi"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return bin_dir


def test_gpu_line_from_nvidia_smi_and_torch(tmp_path: Path, bare_python: Path) -> None:
    project = make_project(tmp_path / "p")
    listing = "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1f2e)'; echo 'GPU 1: NVIDIA H100 80GB HBM3 (UUID: GPU-3a4b)'"
    bin_dir = fake_nvidia_smi(tmp_path, listing)
    code, checks = doctor(project.root, bare_python, bin_dir)
    assert code == 0, checks
    assert levels(checks, "gpu") == [("ok", "2x NVIDIA H100 80GB HBM3")]  # torch is not there to ask


def test_torch_in_the_project_interpreter(tmp_path: Path, torch_python: Path) -> None:
    """Through the shim from a host environment with torch: doctor asks that torch about the GPUs."""
    project = make_project(tmp_path / "p")
    code, checks = doctor(project.root, torch_python)
    assert code == 0, checks
    assert levels(checks, "torch")[0][0] == "ok"
    assert str(torch_python) in levels(checks, "project-python")[0][1]
    listing = "echo 'GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1f2e)'"
    code, checks = doctor(project.root, torch_python, fake_nvidia_smi(tmp_path, listing))
    cuda = subprocess.run([str(torch_python), "-c", "import torch; assert torch.cuda.is_available()"], capture_output=True)
    if cuda.returncode != 0:  # a CPU build, or no driver: torch cannot use the GPU listed
        (level, detail), = levels(checks, "gpu")
        assert level == "warn" and "nvidia-smi lists 1x NVIDIA H100 80GB HBM3 but torch.cuda.is_available() is False" in detail


def test_a_failing_nvidia_smi_warns(tmp_path: Path, bare_python: Path) -> None:
    project = make_project(tmp_path / "p")
    bin_dir = fake_nvidia_smi(tmp_path, "echo 'NVIDIA-SMI has failed because it could not communicate with the NVIDIA driver.' >&2; exit 9")
    code, checks = doctor(project.root, bare_python, bin_dir)
    assert code == 0, checks
    level, detail = levels(checks, "gpu")[0]
    assert level == "warn" and "nvidia-smi failed (NVIDIA-SMI has failed" in detail and "runs use the CPU" in detail


def test_a_project_interpreter_that_does_not_run_fails(project: Project, tmp_path: Path) -> None:
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'error while loading shared libraries: libpython3.11.so.1.0' >&2\nexit 127\n")
    broken.chmod(0o755)
    code, checks = doctor(project.root, AR_PROJECT_PYTHON=str(broken))
    assert code == 1
    (level, detail), = levels(checks, "project-python")
    assert level == "FAIL" and str(broken) in detail and "libpython3.11.so.1.0" in detail
    assert levels(checks, "torch")[0][0] == "warn" and levels(checks, "metric-backend")[0][0] == "ok"


def test_live_unclean_sentinel_fails_until_its_processes_are_gone(project: Project) -> None:
    survivor = subprocess.Popen(["sleep", "60"])
    try:
        (project.expr / ".ar-unclean").write_text(json.dumps({"run_id": "r0003", "pids": [survivor.pid]}))
        code, checks = doctor(project.root)
        assert code == 1
        (level, detail), = levels(checks, "sentinels")
        assert level == "FAIL" and "r0003" in detail and str(survivor.pid) in detail and detail.startswith(".autoresearch/exp/.ar-unclean: ")
        assert detail.endswith("(fix: end them, then delete it)")
    finally:
        survivor.kill()
        survivor.wait()
    code, checks = doctor(project.root)
    assert code == 0, checks
    (level, detail), = levels(checks, "sentinels")
    assert level == "warn" and "gone" in detail and "clears it" in detail


def test_stale_active_record_warns_and_a_held_lock_is_a_run_in_progress(project: Project) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    active = {"run_id": "r0002", "pid": dead.pid, "started_at": "2026-11-22T03:00:00Z", "seconds": 20}
    (project.expr / ".ar-active.json").write_text(json.dumps(active))
    code, checks = doctor(project.root)
    assert code == 0, checks
    (level, detail), = levels(checks, "sentinels")
    assert level == "warn" and "r0002" in detail and "no process holds the lock" in detail

    fd = os.open(project.expr / ".ar-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as the supervisor of a running iteration holds it
        code, checks = doctor(project.root)
    finally:
        os.close(fd)
    assert code == 0, checks
    assert levels(checks, "sentinels") == [("ok", f"exp: r0002 (pid {dead.pid}) is in progress")]


def test_leftover_staging_directories_warn(project: Project) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    (project.root / ".autoresearch" / f".init-next-{dead.pid}").mkdir()
    (project.root / ".autoresearch" / f".chain-child-{dead.pid}").mkdir()
    (project.expr / "best_ckpt.staging").mkdir()
    (project.expr / "best_ckpt.previous").mkdir()
    code, checks = doctor(project.root)
    assert code == 0, checks
    found = levels(checks, "sentinels")
    assert [level for level, _ in found] == ["warn"] * 4
    text = "\n".join(detail for _, detail in found)
    for name in (".autoresearch/exp/best_ckpt.staging", ".autoresearch/exp/best_ckpt.previous", f".init-next-{dead.pid}", f".chain-child-{dead.pid}"):
        assert name in text


def test_shim_from_a_bare_environment_warns_about_torch(project: Project, bare_python: Path) -> None:
    code, checks = doctor(project.root, bare_python)
    assert code == 0, checks
    assert levels(checks, "project-python")[0] == ("ok", f"{sys.version.split()[0]} {bare_python} (the shim's)")
    level, detail = levels(checks, "torch")[0]
    assert level == "warn" and "not importable" in detail and str(bare_python) in detail
    assert levels(checks, "gpu")[0][0] in ("ok", "warn")


def test_configured_backend_library_missing_in_the_project_interpreter_fails(tmp_path: Path, bare_python: Path) -> None:
    project = make_project(tmp_path / "wandb-project", "--metric-backend", "wandb")
    code, checks = doctor(project.root, bare_python)
    assert code == 1
    (level, detail), = levels(checks, "metric-backend")
    assert level == "FAIL" and detail.startswith("wandb: wandb is not installed in") and str(bare_python) in detail


def test_configured_backend_library_present_passes(tmp_path: Path) -> None:
    if subprocess.run([sys.executable, "-c", "import tensorboard"], capture_output=True).returncode != 0:
        pytest.skip("tensorboard is not installed in ar's environment")
    project = make_project(tmp_path, "--metric-backend", "tensorboard")
    code, checks = doctor(project.root)
    assert code == 0, checks
    level, detail = levels(checks, "metric-backend")[0]
    assert level == "ok" and detail.startswith("tensorboard: ") and "tensorboard " in detail


def test_auto_backend_never_fails_on_missing_libraries(tmp_path: Path, bare_python: Path) -> None:
    project = make_project(tmp_path, "--metric-backend", "auto")
    code, checks = doctor(project.root, bare_python)
    assert code == 0, checks
    assert levels(checks, "metric-backend") == [("ok", "auto: neither wandb nor tensorboard installed; runs will use the log backend")]


def test_a_hand_edited_settings_file_fails(project: Project) -> None:
    session = project.expr / ".ar-session.json"
    data = json.loads(session.read_text())
    data["loop"]["seconds"] = 21  # valid JSON, but not what `ar session` wrote
    session.write_text(json.dumps(data))
    code, checks = doctor(project.root)
    assert code == 1
    (level, detail), = levels(checks, "experiment")
    assert level == "FAIL" and "edited by hand" in detail
