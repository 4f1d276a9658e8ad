"""The wandb backend on files written by real wandb runs (offline, in subprocesses, no network).

wandb 0.31 offline writes no files/wandb-summary.json: the metrics are only in run-<id>.wandb. The
online summary layout cannot be produced here (no server), so those tests write the file the way wandb
does: a JSON object, nested dicts for nested keys, media as dicts with `_type`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ar.metrics.errors import MetricsError
from ar.metrics.wandb import BLOCK_SIZE, find_wandb_runs, read_record_file, read_wandb

MAIN_SCRIPT = """
import numpy as np
import wandb

run = wandb.init(project="t")
wandb.define_metric("acc", summary="max")
wandb.log({
    "loss": 1.0, "val/loss": 2.0, "eval": {"top1": 0.5, "deep": {"x": 1}}, "acc": 0.5,
    "note": "text", "flag": True, "vec": [1, 2], "bad": float("nan"), "big": float("inf"),
    "neg": float("-inf"), "h": wandb.Histogram([1, 2, 3, 4]), "img": wandb.Image(np.zeros((4, 4, 3), np.uint8)),
})
wandb.log({"loss": 0.5, "val/loss": 1.5, "eval": {"top1": 0.75, "deep": {"x": 2}}, "acc": 0.9, "bad": 3.0})
wandb.log({"loss": 0.25, "acc": 0.7, "bad": float("nan"), "count": 7})
wandb.log({"long_text": "x" * 100_000, "after_long": 8.0})  # one record over several 32 KiB blocks
run.summary["loss"] = 0.125
run.summary["override"] = 0.5
run.summary["extra"] = {"a": 1.5, "b": "word", "h": {"_type": "histogram", "values": [1], "bins": [0, 1]}}
run.summary["gone"] = 1.0
del run.summary["gone"]
run.finish()
"""

MAIN_EXPECTED = {
    "loss": 0.125,  # the summary override after the last history row
    "val/loss": 1.5,  # a literal slash key
    "eval.top1": 0.75,  # nested dicts join with '.'
    "eval.deep.x": 2.0,
    "acc": 0.7,  # the last history value
    "acc.max": 0.9,  # define_metric(summary="max") writes {"max": ...} summary updates
    "bad": math.nan,
    "big": math.inf,
    "neg": -math.inf,
    "count": 7.0,
    "after_long": 8.0,
    "override": 0.5,
    "extra.a": 1.5,
}


def wandb_env(home: Path, wandb_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "AR_"))}
    env.update(
        HOME=str(home),
        WANDB_MODE="offline",
        WANDB_DIR=str(wandb_dir),
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(home / "config"),
        WANDB_CACHE_DIR=str(home / "cache"),
        WANDB_DATA_DIR=str(home / "data"),
    )
    return env


def run_wandb(script: str, home: Path, wandb_dir: Path) -> None:
    wandb_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=wandb_dir,
        env=wandb_env(home, wandb_dir),
        check=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def record_file(run: Path) -> Path:
    (found,) = run.glob("run-*.wandb")
    return found


def assert_metrics(got: dict[str, float], expected: dict[str, float]) -> None:
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        else:
            assert got[key] == value, key


@pytest.fixture(scope="module")
def main_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run directory (WANDB_DIR) of one finished offline run of MAIN_SCRIPT."""
    base = tmp_path_factory.mktemp("wandb_main")
    run_dir = base / "run"
    run_wandb(MAIN_SCRIPT, base / "home", run_dir)
    return run_dir


@pytest.fixture(scope="module")
def main_record(main_run: Path) -> Path:
    (run,) = find_wandb_runs(main_run, None, 0)
    return record_file(run)


def copy_run(source_record: Path, wandb_dir: Path, name: str, data: bytes | None = None) -> Path:
    """A run directory `name` under wandb_dir/wandb holding source_record's bytes (or `data`) as run-<id>.wandb."""
    run = wandb_dir / "wandb" / name
    run.mkdir(parents=True)
    run_id = name.rsplit("-", 1)[1]
    (run / f"run-{run_id}.wandb").write_bytes(source_record.read_bytes() if data is None else data)
    return run


# --- offline runs: the record file ---


def test_offline_run_final_values(main_run: Path) -> None:
    got = read_wandb(main_run, None, time.time() + 3600)  # `started` only filters a user's shared WANDB_DIR
    assert_metrics(got, MAIN_EXPECTED)


def test_offline_run_layout(main_run: Path, main_record: Path) -> None:
    """What the reader relies on: the directory name, no summary file, the header, several blocks."""
    run = main_record.parent
    assert run.parent == main_run / "wandb"
    assert run.name.startswith("offline-run-") and main_record.name == f"run-{run.name.rsplit('-', 1)[1]}.wandb"
    assert not (run / "files" / "wandb-summary.json").exists()
    data = main_record.read_bytes()
    assert data[:7] == b":W&B\xe1\xbe\x00"
    assert len(data) > 3 * BLOCK_SIZE  # the long text spans blocks: FIRST / MIDDLE / LAST fragments


def test_record_file_cut_anywhere_reads_what_is_complete(main_record: Path, tmp_path: Path) -> None:
    """A file cut at any byte (mid-header, mid-block, mid-record, at a block edge) reads without error."""
    data = main_record.read_bytes()
    full = read_record_file(main_record)
    cut_file = tmp_path / "run-cut.wandb"
    edges = [k * BLOCK_SIZE + d for k in range(1, len(data) // BLOCK_SIZE + 1) for d in (-8, -7, -6, -1, 0, 1, 6, 7, 8)]
    seen_partial = False
    for cut in sorted({*range(0, len(data), 97), *edges, len(data) - 1}):
        cut_file.write_bytes(data[:cut])
        got = read_record_file(cut_file)
        assert set(got) <= set(full) | {"gone"}, cut
        seen_partial |= bool(got) and got != full
    assert seen_partial
    cut_file.write_bytes(data)
    assert_metrics(read_record_file(cut_file), MAIN_EXPECTED)


def test_record_file_cut_mid_block_keeps_earlier_steps(main_record: Path, tmp_path: Path) -> None:
    data = main_record.read_bytes()
    # cut inside the long-text record (several blocks in): all three earlier steps are complete
    cut = 2 * BLOCK_SIZE + 1234
    run = copy_run(main_record, tmp_path, "offline-run-20260101_000000-cut", data[:cut])
    got = read_wandb(tmp_path, None, 0)
    assert run.parent == tmp_path / "wandb"
    assert got["loss"] == 0.25 and got["acc"] == 0.7 and got["count"] == 7.0 and math.isnan(got["bad"])
    assert "after_long" not in got and "override" not in got


def test_killed_run_reads_what_was_flushed(tmp_path: Path) -> None:
    """SIGKILL to the whole process tree (wandb-core included), as the watchdog does, after logging."""
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    script = """
        import sys, time, wandb
        wandb.init(project="t")
        for i in range(3000):
            wandb.log({"loss": 1.0 / (i + 1), "step_no": i})
        print("logged", flush=True)
        time.sleep(60)
    """
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=run_dir,
        env=wandb_env(tmp_path / "home", run_dir),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout.readline().strip() == "logged"
        time.sleep(0.3)
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    got = read_wandb(run_dir, None, 0)
    if got:  # wandb-core writes whole blocks: what reached the disk ends mid-record, that record is dropped
        assert set(got) == {"loss", "step_no"}
        assert 0 <= got["step_no"] < 3000
        assert got["loss"] == 1.0 / (got["step_no"] + 1)
    else:  # nothing but (part of) the header flushed yet
        assert os.path.getsize(record_file(find_wandb_runs(run_dir, None, 0)[-1])) <= BLOCK_SIZE


# --- which run directories count ---


def test_users_shared_wandb_dir_reads_only_runs_started_after_started(main_record: Path, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    # a run left by an earlier experiment, and one from long ago, in the user's WANDB_DIR
    old = copy_run(main_record, shared, main_record.parent.name)
    copy_run(main_record, shared, "offline-run-20200101_000000-ancient")
    (shared / "wandb" / "latest-run").symlink_to(old)
    old_stamp = time.mktime(time.strptime(old.name.split("-")[2], "%Y%m%d_%H%M%S"))
    while math.floor(time.time()) <= old_stamp:  # stamps have whole seconds
        time.sleep(0.05)
    started = time.time()
    assert read_wandb(tmp_path / "run", str(shared), started) == {}  # only old runs there yet
    new_run = 'import wandb\nrun = wandb.init(project="t")\nwandb.log({"which": 2.0})\nrun.finish()\n'
    run_wandb(new_run, tmp_path / "home", shared)
    (new,) = find_wandb_runs(tmp_path / "run", str(shared), started)
    assert new != old
    assert read_wandb(tmp_path / "run", str(shared), started) == {"which": 2.0}
    # without the time filter (WANDB_DIR set by ar to the run directory): every run there, newest last
    assert find_wandb_runs(shared, None, started)[-1] == new
    assert [p.name for p in find_wandb_runs(shared, None, started)][0] == "offline-run-20200101_000000-ancient"


def test_no_wandb_directory_means_no_metrics(tmp_path: Path) -> None:
    assert find_wandb_runs(tmp_path, None, 0) == []
    assert read_wandb(tmp_path, None, 0) == {}
    assert read_wandb(tmp_path, str(tmp_path / "missing"), 0) == {}
    (tmp_path / "wandb" / "offline-run-20260101_000000-empty").mkdir(parents=True)  # init died before the file
    assert read_wandb(tmp_path, None, 0) == {}


def test_last_run_wins_and_dot_wandb_is_found(main_record: Path, tmp_path: Path) -> None:
    copy_run(main_record, tmp_path, "offline-run-20260101_000000-first")
    later = tmp_path / ".wandb" / "offline-run-20260101_000005-second"  # wandb uses .wandb/ when it exists
    later.mkdir(parents=True)
    (later / "run-second.wandb").write_bytes(b":W&B\xe1\xbe\x00")  # started, nothing logged yet
    runs = find_wandb_runs(tmp_path, None, 0)
    assert [p.name for p in runs] == ["offline-run-20260101_000000-first", "offline-run-20260101_000005-second"]
    assert read_wandb(tmp_path, None, 0) == {}


# --- online runs: files/wandb-summary.json ---

ONLINE_SUMMARY = {
    "_runtime": 12.5,
    "_step": 2,
    "_timestamp": 1795318768.3,
    "_wandb": {"runtime": 12},
    "loss": 0.5,
    "val/loss": 1.5,
    "eval": {"top1": 0.75, "deep": {"x": 3}},
    "acc": {"max": 0.9},
    "note": "text",
    "flag": True,
    "vec": [1, 2],
    "bad": math.nan,
    "big": math.inf,
    "h": {"_type": "histogram", "values": [1, 0, 1], "bins": [1, 2, 3, 4]},
    "img": {"_type": "image-file", "width": 4, "height": 4, "size": 69, "path": "media/images/img.png"},
}


def online_run(tmp_path: Path, summary: bytes, record: Path | None = None) -> Path:
    run = tmp_path / "wandb" / "run-20260101_000000-abc123"
    (run / "files").mkdir(parents=True)
    (run / "files" / "wandb-summary.json").write_bytes(summary)
    if record is not None:
        shutil.copyfile(record, run / "run-abc123.wandb")
    return run


def test_online_run_reads_the_summary_file(main_record: Path, tmp_path: Path) -> None:
    # The record file is there too (online runs keep one); the summary is what wandb settled on.
    online_run(tmp_path, json.dumps(ONLINE_SUMMARY).encode(), main_record)
    got = read_wandb(tmp_path, None, 0)
    expected = {"loss": 0.5, "val/loss": 1.5, "eval.top1": 0.75, "eval.deep.x": 3.0, "acc.max": 0.9}
    assert_metrics(got, {**expected, "bad": math.nan, "big": math.inf})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (json.dumps(ONLINE_SUMMARY).encode()[:57], "not valid JSON"),  # cut short mid-write
        (b"loss=0.5\n", "not valid JSON"),
        (b"", "is empty"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"loss": 0.5, "x": "\xff\xfe"}', "not UTF-8"),
    ],
)
def test_unreadable_summary_file_is_an_error(tmp_path: Path, content: bytes, reason: str) -> None:
    online_run(tmp_path, content)
    with pytest.raises(MetricsError, match=reason) as caught:
        read_wandb(tmp_path, None, 0)
    assert "\n" not in str(caught.value) and "wandb-summary.json" in str(caught.value)


# --- broken record files ---


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"this is a training log, not a wandb file\n" * 10, "not a wandb record file"),
        (b"\x00" * 100, "not a wandb record file"),
        (b"PK\x03", "not a wandb record file"),
        (b":W&B\xe1\xbe\x01" + b"\x00" * 50, "unsupported wandb record file version 1"),
    ],
)
def test_not_a_record_file_is_an_error(tmp_path: Path, main_record: Path, content: bytes, reason: str) -> None:
    copy_run(main_record, tmp_path, "offline-run-20260101_000000-bad", content)
    with pytest.raises(MetricsError, match=reason) as caught:
        read_wandb(tmp_path, None, 0)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("content", [b"", b":W&", b":W&B\xe1\xbe"])
def test_record_file_without_a_whole_header_yet_is_empty(tmp_path: Path, main_record: Path, content: bytes) -> None:
    copy_run(main_record, tmp_path, "offline-run-20260101_000000-new", content)
    assert read_wandb(tmp_path, None, 0) == {}


def test_corrupt_record_inside_the_file_is_an_error(tmp_path: Path, main_record: Path) -> None:
    data = bytearray(main_record.read_bytes())
    data[7 + 6] = 9  # the first record's type byte: no such type
    copy_run(main_record, tmp_path, "offline-run-20260101_000000-bad", bytes(data))
    with pytest.raises(MetricsError, match="corrupt record at byte 7"):
        read_wandb(tmp_path, None, 0)
