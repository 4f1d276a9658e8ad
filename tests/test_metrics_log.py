"""Metric scanning on real log files: formats, last-wins, user patterns, chunk edges, memory."""
from __future__ import annotations

import math
import re
import tracemalloc
from pathlib import Path

import pytest

from ar.metrics import log as logscan
from ar.metrics.log import DEFAULT_PATTERN, compile_pattern, scan_log


def write(tmp_path: Path, content: str | bytes) -> Path:
    path = tmp_path / "run.log"
    if isinstance(content, str):
        path.write_text(content)
    else:
        path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("[rank0]: val_loss=0.41", {"val_loss": 0.41}),
        ("epoch 3 val_loss=0.41 acc: 0.9", {"val_loss": 0.41, "acc": 0.9}),
        ("step: 10, loss: 2.3e-1", {"step": 10.0, "loss": 0.23}),
        ("lr = -3E-4 | grad_norm=+1.5 | frac=.25 | n=7.", {"lr": -3e-4, "grad_norm": 1.5, "frac": 0.25, "n": 7.0}),
        ("val/loss=1.5 eval.top1: 0.75 val-acc=0.5", {"val/loss": 1.5, "eval.top1": 0.75, "val-acc": 0.5}),
        ('{"step": 5, "loss": 0.5}', {"step": 5.0, "loss": 0.5}),
        ("loss=0.5\r", {"loss": 0.5}),
        ("no metrics here: just words = text", {}),
    ],
)
def test_formats(tmp_path: Path, line: str, expected: dict[str, float]) -> None:
    assert scan_log(write(tmp_path, f"some header\n{line}\nfooter\n")) == expected


def test_name_at_the_very_start_of_the_file(tmp_path: Path) -> None:
    assert scan_log(write(tmp_path, "loss=1.25")) == {"loss": 1.25}


def test_last_occurrence_wins(tmp_path: Path) -> None:
    log = write(tmp_path, "loss=3\nacc: 0.1\nloss=2 loss=1.5\nother text\n")
    assert scan_log(log) == {"loss": 1.5, "acc": 0.1}


def test_non_finite_values(tmp_path: Path) -> None:
    log = write(tmp_path, "a=nan b=-inf c: inf d=NaN e=Infinity f=-INF g=+nan\nmode=inference h=info\n")
    got = scan_log(log)
    assert set(got) == {"a", "b", "c", "d", "e", "f", "g"}  # `inference` and `info` are not numbers
    assert all(math.isnan(got[k]) for k in "adg")
    assert got["b"] == got["f"] == -math.inf and got["c"] == got["e"] == math.inf


def test_names_glued_to_a_word_are_whole_tokens(tmp_path: Path) -> None:
    log = write(tmp_path, "xval_loss=1 3val_loss=2 --lr=0.1 http://host:8080 t 12:30:45\n")
    assert scan_log(log) == {"xval_loss": 1.0}


def test_names_restrict_the_result(tmp_path: Path) -> None:
    log = write(tmp_path, "loss=1 acc=2 val_loss=3\nloss=4\n")
    assert scan_log(log, names=["loss", "missing"]) == {"loss": 4.0}
    assert scan_log(log, names=[]) == {}


def test_user_pattern_with_name_placeholder(tmp_path: Path) -> None:
    log = write(tmp_path, "loss is 1.0\nval.loss is 2\nloss is 0.5 (3 ok)\nacc is 0.9\n")
    assert scan_log(log, r"{name} is ([\d.]+)", ["loss", "val.loss"]) == {"loss": 0.5, "val.loss": 2.0}
    # the value group by name; literal braces elsewhere stay a regex quantifier
    assert scan_log(log, r"{name} is (\d{1,3})\.(?P<value>\d+)", ["loss", "acc"]) == {"loss": 5.0, "acc": 9.0}
    assert scan_log(log, r"{name} is ([\d.]+)") == {}


def test_user_pattern_with_named_groups(tmp_path: Path) -> None:
    log = write(tmp_path, "M loss 1.5\nM acc 0.7\nM loss 1.25\nM acc oops\n^M x 9\n")
    pattern = r"^M (?P<name>\w+) (?P<value>\S+)$"
    assert scan_log(log, pattern) == {"loss": 1.25, "acc": 0.7}  # `oops` is no number: the last number stays
    assert scan_log(log, pattern, ["acc"]) == {"acc": 0.7}


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        (r"loss=(\d+)", "needs a {name} placeholder or (?P<name>...) and (?P<value>...) groups"),
        (r"(?P<name>\w+)=(\d+)", "needs a {name} placeholder"),
        (r"{name}=\d+", "needs a group around the value"),
        (r"{name}=(\d+", "not a valid regex"),
        (r"(?P<name>\w+)=(?P<value>[", "not a valid regex"),
    ],
)
def test_bad_patterns_are_refused_in_one_line(tmp_path: Path, pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        compile_pattern(pattern)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError):
        scan_log(tmp_path / "missing.log", pattern, ["loss"])


def test_default_pattern_is_a_valid_user_pattern(tmp_path: Path) -> None:
    log = write(tmp_path, "loss=1 acc: 2\n")
    assert scan_log(log, DEFAULT_PATTERN) == scan_log(log) == {"loss": 1.0, "acc": 2.0}


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 7, 16])
@pytest.mark.parametrize("pattern", [None, r"(?<!\w){name}=(\S+)", r"(?<![\w.])(?P<name>[a-z_]+)=(?P<value>\S+)"])
def test_matches_across_chunk_boundaries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int, pattern: str | None
) -> None:
    log = write(tmp_path, "val_loss=0.123456 loss=2.5e-3\nacc=0.75\nxloss=9 val_loss=0.5\n")
    expected = scan_log(log, pattern, ["val_loss", "loss", "acc"])
    assert expected == {"val_loss": 0.5, "loss": 2.5e-3, "acc": 0.75}
    monkeypatch.setattr(logscan, "CHUNK_SIZE", chunk_size)
    assert scan_log(log, pattern, ["val_loss", "loss", "acc"]) == expected


@pytest.mark.parametrize("chunk_size", [7, 64, 100])
def test_long_lines_scanned_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int) -> None:
    # Lines far longer than the carry limit, with matches at every offset relative to the pieces.
    line = " ".join(f"m{i % 7}={i}" for i in range(400))
    log = write(tmp_path, f"{line}\n{line} tail=1")
    expected = {f"m{k}": float(max(i for i in range(400) if i % 7 == k)) for k in range(7)} | {"tail": 1.0}
    monkeypatch.setattr(logscan, "CHUNK_SIZE", chunk_size)
    monkeypatch.setattr(logscan, "CARRY_MAX", 160)
    assert scan_log(log) == expected
    assert scan_log(log, r"(?<![\w])(?P<name>m\d|tail)=(?P<value>\d+)") == expected
    assert scan_log(log, r"{name}=(\d+)", ["m3", "tail"]) == {"m3": expected["m3"], "tail": 1.0}


def test_non_utf8_bytes(tmp_path: Path) -> None:
    log = write(tmp_path, b"\xff\xfe junk \x80 loss=0.5 \xc3\x28\n\xe9t=1 \xe2\x86\x92 acc: 2 caf\xc3\xa9: 3\n")
    assert scan_log(log) == {"loss": 0.5, "acc": 2.0}  # `t` is glued to a non-ASCII letter
    assert scan_log(log, r"(?P<name>caf\S+): (?P<value>\d)") == {"caf\u00e9": 3.0}
    assert scan_log(log, r"(?P<name>\xe9\w)=(?P<value>\d)") == {"\ufffdt": 1.0}


def test_huge_lines_use_bounded_memory(tmp_path: Path) -> None:
    filler = b"x" * (50 << 20)
    log = write(tmp_path, filler + b" loss=0.9\n" + filler + b"\nloss=0.5\n" + filler + b" acc=0.3")
    tracemalloc.start()
    try:
        got = scan_log(log)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == {"loss": 0.5, "acc": 0.3}
    assert peak < 16 << 20, peak


def test_missing_file(tmp_path: Path) -> None:
    assert scan_log(tmp_path / "nope.log") == {}
    assert scan_log(tmp_path / "nope.log", r"{name}=(\d+)", ["loss"]) == {}


def test_quoted_values_as_transformers_5_prints_them(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("{'loss': '3.992', 'grad_norm': '1.25', 'learning_rate': '5e-05', 'epoch': '0.5'}\n"
                   '{"eval_loss": "2.5", "eval_runtime": 0.1}\n')
    assert scan_log(log) == {"loss": 3.992, "grad_norm": 1.25, "learning_rate": 5e-05, "epoch": 0.5,
                             "eval_loss": 2.5, "eval_runtime": 0.1}
