"""Checkpoints (SPEC §5.7, §6): which file is a run's checkpoint, promotion to best_ckpt/ by hard
link, deletion of the ones not kept, and repair after a kill at each step of the swap.

Real projects, real `ar` processes; the training programs write real files (and, in one test, a
real torch state_dict).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import uuid
from pathlib import Path

import pytest

from conftest import Project, clean_env, make_project, run_python
from test_integrity import check_invariants

MiB = 1 << 20


def saving(value: float, files: dict[str, int], seed: int, into: str = "os.environ['AR_CKPT_DIR']", pause: float = 0.0) -> str:
    """A train.py body that writes `files` (relative name -> size, random bytes from `seed`) under
    `into` (a Python expression), one after the other, then prints val_loss."""
    return (
        "import os, random\n"
        f"rng = random.Random({seed})\n"
        f"base = {into}\n"
        f"for name, size in {files!r}.items():\n"
        "    path = os.path.join(base, name)\n"
        "    os.makedirs(os.path.dirname(path), exist_ok=True)\n"
        "    with open(path, 'wb') as f:\n"
        "        f.write(rng.randbytes(size))\n"
        f"    __import__('time').sleep({pause})\n"
        f"print('val_loss={value}')\n"
    )


def expected(files: dict[str, int], seed: int) -> dict[str, bytes]:
    rng = __import__("random").Random(seed)
    return {name: rng.randbytes(size) for name, size in files.items()}


def run(project: Project, body: str, env: dict | None = None, note: str = "test") -> list[str]:
    project.write_train(body, note=note)
    done = project.ar("run", env=env, timeout=60)
    if env is None:
        assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip().splitlines()


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def meta(project: Project) -> dict:
    return json.loads((project.expr / "best_ckpt" / "meta.json").read_text())


def assert_consistent(project: Project) -> None:
    """best.json's checkpoint, when set, is best_ckpt/<name> of the same run, and it exists."""
    best = project.best()
    if best and best["checkpoint"]:
        assert best["checkpoint"].startswith("best_ckpt/")
        assert (project.expr / best["checkpoint"]).exists()
        assert meta(project)["run_id"] == best["run_id"]


def assert_no_swap_leftovers(project: Project) -> None:
    assert not (project.expr / "best_ckpt.staging").exists()
    assert not (project.expr / "best_ckpt.previous").exists()


# ---------------------------------------------------------------- promotion into best_ckpt


SHAPES = {
    "file": {"model.pt": 300_000},
    "directory": {f"hf/shard-{i:02d}.safetensors": 40_000 + i for i in range(6)} | {"hf/config/config.json": 500, "hf/tok.json": 0},
}


@pytest.mark.parametrize("shape", SHAPES)
def test_advance_promotes_by_hard_link_and_others_are_deleted(project: Project, shape: str):
    files = SHAPES[shape]
    run(project, saving(1.0, files, seed=1))
    best_ckpt = project.expr / "best_ckpt" / "ckpt"
    own = project.expr / "runs" / "r0001" / "ckpt"
    assert tree(best_ckpt) == expected(files, 1)
    for name in files:  # the same inodes: nothing was copied
        assert (best_ckpt / name).stat().st_ino == (own / name).stat().st_ino
    assert project.best()["checkpoint"] == "best_ckpt/ckpt"
    assert project.result("r0001")["checkpoint"] == ".autoresearch/exp/runs/r0001/ckpt"
    m = meta(project)
    assert (m["run_id"], m["source"], m["method"], m["bytes"]) == ("r0001", ".autoresearch/exp/runs/r0001/ckpt", "link", sum(files.values()))

    run(project, saving(2.0, files, seed=2))  # worse: its checkpoint is deleted, the best's untouched
    assert project.rows()[-1][4] == "revert"
    assert not (project.expr / "runs" / "r0002" / "ckpt").exists()
    assert project.result("r0002")["checkpoint"] == ".autoresearch/exp/runs/r0002/ckpt"
    assert tree(best_ckpt) == expected(files, 1) and meta(project)["run_id"] == "r0001"

    run(project, saving(0.5, files, seed=3))  # better: promoted; the previous best's own copy goes
    assert tree(best_ckpt) == expected(files, 3)
    assert meta(project)["run_id"] == project.best()["run_id"] == "r0003"
    assert not own.exists()
    assert_no_swap_leftovers(project)
    assert_consistent(project)
    check_invariants(project)

    status = project.ar("status", "--compact", check=True).stdout.splitlines()
    assert len(status) <= 10 and status[1] == "best 0.5 r0003 (baseline 1 r0001), checkpoint .autoresearch/exp/best_ckpt/ckpt"
    data = json.loads(project.ar("status", "--json", check=True).stdout)
    assert data["best"]["checkpoint"] == ".autoresearch/exp/best_ckpt/ckpt"


def test_disk_use_stays_bounded(project: Project):
    size = MiB
    values = [1.0, 2.0, 0.8, 0.9, 0.5, 3.0, 0.4]  # advance, revert, advance, revert, advance, revert, advance
    for i, value in enumerate(values):
        run(project, saving(value, {"model.pt": size, "opt/state.pt": size // 4}, seed=i))
        inodes = {}
        for path in project.expr.rglob("*"):
            st = path.lstat()
            if path.is_file():
                inodes[(st.st_dev, st.st_ino)] = st.st_size
        big = [n for n in inodes.values() if n >= size // 4]
        assert len(big) == 2, f"after run {i + 1}: {len(big)} checkpoint files kept"
        assert sum(inodes.values()) < size * 1.25 + 200_000, f"after run {i + 1}: {sum(inodes.values())} bytes"
    assert project.best()["run_id"] == "r0007" and meta(project)["run_id"] == "r0007"
    check_invariants(project)


def test_experiment_without_checkpoints_advances_and_drops_an_older_best_ckpt(project: Project):
    run(project, "print('val_loss=1.0')\n")
    assert project.rows()[-1][4] == "advance"
    assert project.best()["checkpoint"] is None and project.result("r0001")["checkpoint"] is None
    assert not (project.expr / "best_ckpt").exists()

    run(project, saving(0.5, {"model.pt": 1000}, seed=1))
    assert project.best()["checkpoint"] == "best_ckpt/ckpt"

    # A later best that saved nothing: the old best_ckpt belonged to another train.py, so it goes.
    run(project, "print('val_loss=0.2')\n")
    best = project.best()
    assert (best["run_id"], best["checkpoint"]) == ("r0003", None)
    assert not (project.expr / "best_ckpt").exists()
    assert not (project.expr / "runs" / "r0002" / "ckpt").exists()
    assert_no_swap_leftovers(project)
    check_invariants(project)
    status = project.ar("status", "--compact", check=True).stdout.splitlines()
    assert status[1] == "best 0.2 r0003 (baseline 1 r0001)"


# ---------------------------------------------------------------- --checkpoint-glob


def test_glob_takes_only_the_newest_match_written_during_the_run(tmp_path: Path):
    project = make_project(tmp_path, "--checkpoint-glob", "ckpts/*.pt")
    ckpts = project.root / "ckpts"
    ckpts.mkdir()
    (ckpts / "old.pt").write_bytes(b"from last week")
    os.utime(ckpts / "old.pt", (time.time() - 7 * 86400,) * 2)
    (ckpts / "recent.pt").write_bytes(b"written just before the run")  # newer than any run of last week
    stale = {"old.pt": b"from last week", "recent.pt": b"written just before the run"}

    run(project, "print('val_loss=1.0')\n")  # writes no checkpoint: nothing stale is taken
    assert project.rows()[-1][4] == "advance"
    assert project.result("r0001")["checkpoint"] is None and project.best()["checkpoint"] is None
    assert not (project.expr / "best_ckpt").exists()

    files = {"a.pt": 1000, "b.pt": 2000}
    run(project, saving(0.5, files, seed=5, into="'ckpts'", pause=0.05))
    assert project.result("r0002")["checkpoint"] == "ckpts/b.pt"
    assert (project.expr / "best_ckpt" / "b.pt").read_bytes() == expected(files, 5)["b.pt"]
    assert project.best()["checkpoint"] == "best_ckpt/b.pt" and meta(project)["source"] == "ckpts/b.pt"
    assert not (ckpts / "b.pt").exists(), "the promoted match outside the run dir is moved into best_ckpt"

    run(project, saving(0.9, {"c.pt": 100}, seed=6, into="'ckpts'"))  # worse: its match is deleted
    assert project.result("r0003")["checkpoint"] == "ckpts/c.pt"
    assert sorted(p.name for p in ckpts.iterdir()) == ["a.pt", "old.pt", "recent.pt"]
    assert {name: (ckpts / name).read_bytes() for name in stale} == stale, "a file not written by the run was touched"
    assert meta(project)["run_id"] == "r0002"
    check_invariants(project)


def test_glob_directory_counts_only_when_all_of_it_is_new(tmp_path: Path):
    """Saving again into a directory of an earlier run rewrites its files in place (the directory's own
    mtime stays old): it counts. A directory still holding an older file is not this run's."""
    project = make_project(tmp_path, "--checkpoint-glob", "out/*")
    old = time.time() - 3600
    for name in ("model/a.bin", "model/b.bin", "mixed/a.bin", "mixed/b.bin"):
        path = project.root / "out" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"earlier run")
        os.utime(path, (old, old))
    for directory in ("model", "mixed"):
        os.utime(project.root / "out" / directory, (old, old))
    files = {"mixed/a.bin": 10, "model/a.bin": 20, "model/b.bin": 30}
    run(project, saving(1.0, files, seed=4, into="'out'", pause=0.02))
    assert project.result("r0001")["checkpoint"] == "out/model"
    got = expected(files, 4)
    assert tree(project.expr / "best_ckpt" / "model") == {"a.bin": got["model/a.bin"], "b.bin": got["model/b.bin"]}
    mixed = project.root / "out" / "mixed"
    assert tree(mixed) == {"a.bin": got["mixed/a.bin"], "b.bin": b"earlier run"}, "not the checkpoint: left alone"


@pytest.mark.parametrize(
    "pattern, files, chosen",
    [
        # rank 1 writes last (newest), rank 0 still wins
        ("ckpts/*.pt", {"model_rank0.pt": 300, "model_rank_2.pt": 200, "model_rank1.pt": 100}, "model_rank0.pt"),
        # directories per rank, named -r<N>
        ("{run_dir}/out/*", {"ckpt-r0/w.bin": 300, "ckpt-r0/cfg.json": 10, "ckpt-r1/w.bin": 100}, "ckpt-r0"),
    ],
)
def test_glob_rank0_wins(tmp_path: Path, pattern: str, files: dict, chosen: str):
    project = make_project(tmp_path, "--checkpoint-glob", pattern)
    into = "'ckpts'" if pattern.startswith("ckpts") else "os.path.join(os.environ['AR_RUN_DIR'], 'out')"
    run(project, saving(1.0, files, seed=3, into=into, pause=0.02))
    recorded = project.result("r0001")["checkpoint"]
    assert Path(recorded).name == chosen
    want = {k.split("/", 1)[1] if "/" in k else k: v for k, v in expected(files, 3).items() if k.startswith(chosen)}
    promoted = project.expr / "best_ckpt" / chosen
    assert (tree(promoted) if promoted.is_dir() else {chosen: promoted.read_bytes()}) == want
    assert project.best()["checkpoint"] == f"best_ckpt/{chosen}"


@pytest.mark.parametrize("pattern", ["{run_dir}", "{run_dir}/*", "*", ".autoresearch/*/runs/*", "..", "../*"])
def test_glob_never_takes_ars_own_files_or_the_project(tmp_path: Path, pattern: str):
    """A careless glob matches the run directory, its log, the state directory or the project's
    parents: none of them is promoted, and a worse run deletes none of them."""
    project = make_project(tmp_path / "proj", "--checkpoint-glob", pattern)
    run(project, "print('val_loss=1.0')\n")
    run(project, "print('val_loss=2.0')\n")
    assert [project.result(r)["checkpoint"] for r in ("r0001", "r0002")] == [None, None]
    assert not (project.expr / "best_ckpt").exists()
    for run_id in ("r0001", "r0002"):
        assert {"train.py", "run.log", "result.json"} <= {p.name for p in (project.expr / "runs" / run_id).iterdir()}
    check_invariants(project)


def test_cross_filesystem_promotion_copies(tmp_path: Path):
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("/dev/shm is missing or on the same filesystem as the test's tmp dir: no cross-filesystem case here")
    outside = shm / f"ar-test-{uuid.uuid4().hex}"
    outside.mkdir()
    try:
        project = make_project(tmp_path, "--checkpoint-glob", f"{outside}/*.pt")
        files = {"model.pt": 500_000}
        run(project, saving(1.0, files, seed=9, into=repr(str(outside))))
        assert project.result("r0001")["checkpoint"] == f"{outside}/model.pt"  # outside the project: absolute
        promoted = project.expr / "best_ckpt" / "model.pt"
        assert promoted.read_bytes() == expected(files, 9)["model.pt"]
        assert meta(project)["method"] == "copy"
        assert promoted.stat().st_dev == tmp_path.stat().st_dev
        assert not (outside / "model.pt").exists(), "the copied source is removed (it was this run's match)"
        run(project, saving(2.0, files, seed=10, into=repr(str(outside))))
        assert not list(outside.iterdir()) and meta(project)["run_id"] == "r0001"
        check_invariants(project)
    finally:
        shutil.rmtree(outside, ignore_errors=True)


# ---------------------------------------------------------------- kills during the swap


PROMOTION_POINTS = ["after_result", "after_stage", "after_retire_old", "after_swap", "after_best_json", "after_drop_previous"]


@pytest.mark.parametrize("where", ["run_dir", "glob"])
@pytest.mark.parametrize("point", PROMOTION_POINTS)
def test_kill_at_each_promotion_step(tmp_path: Path, point: str, where: str):
    """The new best has a checkpoint and replaces an older one; `ar` dies at `point`."""
    if where == "glob":
        project = make_project(tmp_path, "--checkpoint-glob", "ckpts/*")
        into, name = "'ckpts'", "step"  # a directory match outside the run dir: moved into best_ckpt
    else:
        project = make_project(tmp_path)
        into, name = "os.environ['AR_CKPT_DIR']", "ckpt"
    files = {"step/model.pt": 20_000, "step/extra/opt.pt": 5_000}
    run(project, saving(1.0, files, seed=1, into=into))
    project.write_train(saving(0.5, files, seed=2, into=into), note="killed")
    done = project.ar("run", env=clean_env(AR_CRASH_AT=point), timeout=60)
    assert done.returncode not in (0, -signal.SIGKILL), done
    assert_consistent(project)  # even before repair: never a pointer to a missing or wrong checkpoint

    assert project.ar("status").returncode == 0
    best = check_invariants(project)
    assert best["run_id"] == "r0002" and [r[0] for r in project.rows()] == ["r0001", "r0002"]
    assert best["checkpoint"] == f"best_ckpt/{name}" and meta(project)["run_id"] == "r0002"
    stored = project.expr / "best_ckpt" / name
    want = {k.split("/", 1)[1]: v for k, v in expected(files, 2).items()}
    assert tree(stored if where == "glob" else stored / "step") == want
    assert_no_swap_leftovers(project)
    assert not (project.expr / "runs" / "r0001" / "ckpt").exists()
    if where == "glob":
        assert not (project.root / "ckpts" / "step").exists()

    assert project.ar("status").returncode == 0  # idempotent
    assert meta(project)["run_id"] == "r0002" and tree(stored if where == "glob" else stored / "step") == want


def test_kill_before_a_worse_runs_checkpoint_is_deleted(project: Project):
    run(project, saving(1.0, {"model.pt": 1000}, seed=1))
    project.write_train(saving(2.0, {"model.pt": 1000}, seed=2), note="killed")
    project.ar("run", env=clean_env(AR_CRASH_AT="after_result"), timeout=60)
    assert (project.expr / "runs" / "r0002" / "ckpt" / "model.pt").exists()
    assert project.ar("status").returncode == 0
    assert not (project.expr / "runs" / "r0002" / "ckpt").exists()
    assert meta(project)["run_id"] == project.best()["run_id"] == "r0001"
    check_invariants(project)


def test_swap_leftovers_outside_a_run_are_settled(project: Project):
    run(project, saving(1.0, {"model.pt": 1000}, seed=1))
    expr = project.expr
    # best_ckpt moved aside by hand (as a swap would), best.json still pointing at it: it comes back
    (expr / "best_ckpt").rename(expr / "best_ckpt.previous")
    (expr / "best_ckpt.staging" / "half").mkdir(parents=True)
    assert project.ar("status").returncode == 0
    assert_no_swap_leftovers(project)
    assert_consistent(project)
    assert tree(expr / "best_ckpt" / "ckpt") == expected({"model.pt": 1000}, 1)
    # best.json lost: rebuilt from results, pointing at best_ckpt again
    (expr / "best.json").unlink()
    assert project.ar("status").returncode == 0
    assert project.best()["checkpoint"] == "best_ckpt/ckpt"


# ---------------------------------------------------------------- a real torch checkpoint


MODEL = "torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))"


def test_torch_state_dict_round_trip(tmp_path: Path, torch_python: Path):
    project = make_project(tmp_path, "--runner", f"{torch_python} {{train_py}}")
    body = (
        "import os, torch\n"
        "torch.manual_seed(0)\n"
        f"model = {MODEL}\n"
        "torch.save(model.state_dict(), os.path.join(os.environ['AR_CKPT_DIR'], 'model.pt'))\n"
        "print('val_loss=0.3')\n"
    )
    run(project, body)
    best = project.best()
    # the same weights, made again in a fresh process, equal the promoted ones and load back
    check = (
        "import sys, torch\n"
        "state = torch.load(sys.argv[1])\n"
        "torch.manual_seed(0)\n"
        f"model = {MODEL}\n"
        "assert state.keys() == model.state_dict().keys()\n"
        "assert all(torch.equal(t, state[k]) for k, t in model.state_dict().items())\n"
        "model.load_state_dict(state)\n"
        "print('same')\n"
    )
    assert run_python(torch_python, check, str(project.expr / best["checkpoint"] / "model.pt")) == "same\n"
