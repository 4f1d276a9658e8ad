"""`ar init --launcher torchrun --nproc-per-node 2`: the runner is built for the launcher, and a
real torchrun of 2 gloo workers runs under `ar run` (through the shim, from a host environment
with torch), rank 0 reporting the metric; no worker outlives the run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import Project, clean_env

TRAIN = """RUN_NOTE = 'two workers'
import os
import torch
import torch.distributed as dist

dist.init_process_group("gloo")
rank = dist.get_rank()
total = torch.tensor([float(rank + 1)])
dist.all_reduce(total)
open(os.path.join(os.environ["AR_RUN_DIR"], f"worker{rank}.pid"), "w").write(str(os.getpid()))
if rank == 0:
    print(f"world={dist.get_world_size()} val_loss={1.0 / total.item():.4f}", flush=True)
dist.destroy_process_group()
"""


def init(root: Path, *extra: str) -> subprocess.CompletedProcess:
    return Project(root).ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss",
                            "--primary-direction", "min", *extra)


@pytest.mark.parametrize("args, words", [
    (["--launcher", "mpirun"], "--launcher 'mpirun' is not known"),
    (["--launcher", "torchrun", "--runner", "{python} x.py"], "--launcher and --runner"),
    (["--launcher", "torchrun", "--nproc-per-node", "0"], "out of range"),
])
def test_bad_launcher_flags_are_one_line_errors(tmp_path: Path, args: list[str], words: str) -> None:
    done = init(tmp_path, *args)
    assert done.returncode == 1 and words in done.stderr and done.stderr.count("\n") == 1
    assert not (tmp_path / ".autoresearch").exists()


def test_torchrun_with_two_gloo_workers(tmp_path: Path, torch_python: Path) -> None:
    assert init(tmp_path, "--launcher", "torchrun", "--nproc-per-node", "2", "--seconds", "120").returncode == 0
    project = Project(tmp_path)
    session = project.ar("session", check=True).stdout
    assert "runner {python} -m torch.distributed.run --standalone --nproc-per-node 2 {train_py}" in session
    project.train_py.write_text(TRAIN)
    done = subprocess.run([str(torch_python), ".autoresearch/ar.py", "run"], cwd=tmp_path, env=clean_env(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    assert (result["status"], result["verdict"]) == ("ok", "advance"), (result, (project.expr / "runs/r0001/run.log").read_text()[-2000:])
    assert result["primary"]["value"] == pytest.approx(1 / 3, abs=1e-4)
    assert "world=2" in (project.expr / "runs" / "r0001" / "run.log").read_text()
    for rank in (0, 1):
        pid = int((project.expr / "runs" / "r0001" / f"worker{rank}.pid").read_text())
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(") ")[1][:1]
