"""Metric scanning on real log files: formats, last-wins, user patterns, chunk edges, the backward read, memory."""
from __future__ import annotations

import math
import random
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


def set_chunk_size(monkeypatch: pytest.MonkeyPatch, size: int) -> None:
    """For the forward scan and the backward read alike."""
    monkeypatch.setattr(logscan, "CHUNK_SIZE", size)
    monkeypatch.setattr(logscan, "TAIL_CHUNK_SIZE", size)


def pick(metrics: dict[str, float], names: list[str]) -> dict[str, str]:
    """The named metrics, as reprs so that nan equals nan."""
    return {name: repr(metrics[name]) for name in names if name in metrics}


def test_names_are_looked_for_from_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = write(tmp_path, "early=1\n" + "filler\n" * 100 + "loss=1 acc=2 val_loss=3\nloss=4\n")
    set_chunk_size(monkeypatch, 64)
    # the other names met on the way come along; `early` lies in a part never read
    assert scan_log(log, names=["loss"]) == {"loss": 4.0, "acc": 2.0, "val_loss": 3.0}
    assert scan_log(log, DEFAULT_PATTERN, ["loss"]) == {"loss": 4.0, "acc": 2.0, "val_loss": 3.0}
    assert scan_log(log, r"(?<!\w)(?P<name>[a-z_]+)=(?P<value>\d+)", ["loss"]) == {"loss": 4.0, "acc": 2.0, "val_loss": 3.0}
    # a name only at the very start, or never there, reads it all
    assert scan_log(log, names=["loss", "early"]) == {"loss": 4.0, "acc": 2.0, "val_loss": 3.0, "early": 1.0}
    assert scan_log(log, names=["missing"]) == {"loss": 4.0, "acc": 2.0, "val_loss": 3.0, "early": 1.0}
    assert scan_log(log, r"{name}=(\d+)", ["loss", "early"]) == {"loss": 4.0, "early": 1.0}
    assert scan_log(log, names=[]) == {}


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the backward reads of the log, as scan_log makes them."""
    sizes: list[int] = []
    read = logscan._read

    def counted(f, start: int, end: int) -> bytes:
        sizes.append(end - start)
        return read(f, start, end)

    monkeypatch.setattr(logscan, "_read", counted)
    return sizes


@pytest.mark.parametrize("pattern", [None, r"(?<!\w){name}=([\d.]+)", r"^(?P<name>\w+)=(?P<value>[\d.]+)$"])
def test_the_backward_read_stops_at_the_last_chunk_that_holds_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pattern: str | None
) -> None:
    log = write(tmp_path, "loss=9\n" * 20_000 + "val_loss=0.5\nloss=0.25\n")
    set_chunk_size(monkeypatch, 1024)
    reads = count_reads(monkeypatch)
    assert pick(scan_log(log, pattern, ["val_loss", "loss"]), ["val_loss", "loss"]) == {"val_loss": "0.5", "loss": "0.25"}
    assert reads == [1024 + 1]  # a chunk and the newline before its first line
    reads.clear()
    assert scan_log(log, pattern, ["missing"]) == ({} if pattern and "{name}" in pattern else {"val_loss": 0.5, "loss": 0.25})
    size = log.stat().st_size
    assert size <= sum(reads) < size * 1.01  # the fallback: every byte, a cut line twice


def test_a_pattern_that_may_span_lines_scans_forward(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = write(tmp_path, "loss\t=  0.5\nloss =\n7\n")
    reads = count_reads(monkeypatch)
    assert scan_log(log, r"{name}\s*=\s*([\d.]+)", ["loss"]) == {"loss": 7.0}  # across the line break, as before
    assert reads == []


@pytest.mark.parametrize(
    ("pattern", "one_line"),
    [
        (DEFAULT_PATTERN, True),  # its leading byte may be the line break before the name, nothing else
        (r"{name}=(\S+)", True),
        (r"(?<!\w){name}[=:] *([\d.]+)", True),
        (r"^M (?P<name>\w+) (?P<value>\S+)$", True),
        (r"\s(?P<name>\w+)=(?P<value>\d+)", True),
        (r"{name}=(.*)", True),
        (r"{name}=([^\n,]+)", True),
        (r"{name}\s*=\s*(\S+)", False),
        (r"{name}=([^,]+)", False),
        (r"(?s){name}=(.+)", False),
        (r"{name}=(?s:.)(\d)", False),
        (r"\A{name}=(\d+)", False),
        (r"{name}=(\d+)\Z", False),
        (r"{name}=(\d+)(?-m:$)", False),
        (r"{name}=(\d+)(?=\n)", False),
        (r"{name}=(\d+)\n", False),
        (r"(?P<name>\w+)\W+(?P<value>\d+)", False),
    ],
)
def test_which_patterns_stay_on_one_line(pattern: str, one_line: bool) -> None:
    assert [matcher.one_line for matcher in compile_pattern(pattern, ["loss"])] == [one_line]


def test_the_default_matcher_is_rightly_marked_one_line() -> None:
    assert logscan._DEFAULT.one_line is compile_pattern(DEFAULT_PATTERN)[0].one_line is True


def test_a_log_still_being_written_is_read_as_it_was_at_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = write(tmp_path, "loss=1\n" * 1000 + "loss=0.5\nval_lo")
    read = logscan._read

    def read_while_training_writes(f, start: int, end: int) -> bytes:
        with log.open("ab") as writer:
            writer.write(b"ss=0.1\nloss=0.01\n")
        return read(f, start, end)

    monkeypatch.setattr(logscan, "_read", read_while_training_writes)
    set_chunk_size(monkeypatch, 64)
    assert scan_log(log, names=["loss", "val_loss"]) == {"loss": 0.5}


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
    assert scan_log(log, pattern, ["acc"]) == {"loss": 1.25, "acc": 0.7}


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
    names = ["val_loss", "loss", "acc"]
    expected = {"val_loss": "0.5", "loss": "0.0025", "acc": "0.75"}
    assert pick(scan_log(log, pattern, names), names) == expected
    set_chunk_size(monkeypatch, chunk_size)
    assert pick(scan_log(log, pattern, names), names) == expected


@pytest.mark.parametrize("chunk_size", [7, 64, 100])
def test_long_lines_scanned_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_size: int) -> None:
    # Lines far longer than the carry limit, with matches at every offset relative to the pieces.
    line = " ".join(f"m{i % 7}={i}" for i in range(400))
    log = write(tmp_path, f"{line}\n{line} tail=1")
    expected = {f"m{k}": float(max(i for i in range(400) if i % 7 == k)) for k in range(7)} | {"tail": 1.0}
    set_chunk_size(monkeypatch, chunk_size)
    monkeypatch.setattr(logscan, "CARRY_MAX", 160)
    assert scan_log(log) == expected
    assert scan_log(log, r"(?<![\w])(?P<name>m\d|tail)=(?P<value>\d+)") == expected
    assert scan_log(log, r"{name}=(\d+)", ["m3", "tail"]) == {"m3": expected["m3"], "tail": 1.0}
    assert scan_log(log, names=["m3", "tail"]) == expected  # backwards: these lines are scanned forwards
    assert scan_log(log, names=["m3", "tail", "missing"]) == expected


@pytest.mark.parametrize("shift", range(0, 64, 3))
def test_a_long_line_is_read_backwards_from_where_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shift: int
) -> None:
    # The metric sits at every offset from the chunk boundaries, in a line the backward read cannot carry.
    log = write(tmp_path, "loss=1\n" + "a " * (200 + shift) + "val_loss=0.123 " + "b " * 150 + "\n" + "c " * 99)
    set_chunk_size(monkeypatch, 64)
    monkeypatch.setattr(logscan, "CARRY_MAX", 160)
    assert scan_log(log, names=["val_loss", "loss"]) == {"val_loss": 0.123, "loss": 1.0}
    assert scan_log(log, r"(?<!\w){name}=([\d.]+)", ["val_loss", "loss"]) == {"val_loss": 0.123, "loss": 1.0}


def test_non_utf8_bytes(tmp_path: Path) -> None:
    log = write(tmp_path, b"\xff\xfe junk \x80 loss=0.5 \xc3\x28\n\xe9t=1 \xe2\x86\x92 acc: 2 caf\xc3\xa9: 3\n")
    assert scan_log(log) == {"loss": 0.5, "acc": 2.0}  # `t` is glued to a non-ASCII letter
    assert scan_log(log, r"(?P<name>caf\S+): (?P<value>\d)") == {"caf\u00e9": 3.0}
    assert scan_log(log, r"(?P<name>\xe9\w)=(?P<value>\d)") == {"\ufffdt": 1.0}


def test_huge_lines_use_bounded_memory(tmp_path: Path) -> None:
    filler = b"x" * (50 << 20)
    log = write(tmp_path, filler + b" loss=0.9\n" + filler + b"\nloss=0.5\n" + filler + b" acc=0.3")
    for names in (None, ["loss", "acc"], ["missing"]):
        tracemalloc.start()
        try:
            got = scan_log(log, names=names)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got == {"loss": 0.5, "acc": 0.3}
        assert peak < 16 << 20, (names, peak)


def test_missing_file(tmp_path: Path) -> None:
    assert scan_log(tmp_path / "nope.log") == {}
    assert scan_log(tmp_path / "nope.log", r"{name}=(\d+)", ["loss"]) == {}


def test_quoted_values_as_transformers_5_prints_them(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("{'loss': '3.992', 'grad_norm': '1.25', 'learning_rate': '5e-05', 'epoch': '0.5'}\n"
                   '{"eval_loss": "2.5", "eval_runtime": 0.1}\n')
    assert scan_log(log) == {"loss": 3.992, "grad_norm": 1.25, "learning_rate": 5e-05, "epoch": 0.5,
                             "eval_loss": 2.5, "eval_runtime": 0.1}


# The property: on generated logs, at any chunk size, the backward read agrees with the forward scan.
NAMES = ["loss", "val_loss", "acc", "lr", "eval/top1", "first", "never"]
PATTERNS = [
    None,
    r"(?<![\w./])(?P<name>[a-z_/]+[a-z0-9]*)[=:] ?'?(?P<value>[-+\w.]+)",
    r"^M (?P<name>[\w/]+) (?P<value>\S+?)\r?$",
    r"(?<![\w/]){name}['\"]?[=:] *['\"]?([-+\w.]+)",
    r"{name} is (?P<value>\S+)",
    r"{name}\s+is\s+(\S+)",  # may span lines: both take the forward scan
]


def generated_log(rng: random.Random) -> bytes:
    lines = [token("first", rng)]  # a name seen only at the very start
    for _ in range(rng.randrange(5, 120)):
        tokens = 300 if rng.random() < 0.05 else rng.randrange(0, 7)  # now and then a line longer than CARRY_MAX
        lines.append(rng.choice([" ", " | ", ", ", "\t"]).join(token(rng.choice(NAMES[:5]), rng) for _ in range(tokens)))
    text = b"".join(line.encode() + rng.choice([b"\n", b"\r\n"]) for line in lines)
    return text[:-2] if rng.random() < 0.3 else text  # a partial last line, no newline


def token(name: str, rng: random.Random) -> str:
    value = rng.choice(["nan", "-inf", "inf", "NaN", "Infinity", str(rng.randrange(100)), f"{rng.random():.6f}",
                        f"{rng.uniform(-1, 1):.3e}", "oops"])
    return rng.choice([
        f"{name}={value}", f"{name}: {value}", f"[rank{rng.randrange(8)}]: {name}={value}", f"{{'{name}': '{value}'}}",
        f'{{"{name}": {value}}}', f"M {name} {value}", f"{name} is {value}", f"step {rng.randrange(9999)}", "xloss=9",
        "it/s", "http://host:8080", "\u00e9t\u00e9=1",
    ])


def forward_scan(log: Path, pattern: str | None, names: list[str]) -> dict[str, float]:
    """The whole-log forward scan, the reference: as scan_log runs it for a pattern that may span lines."""
    with pytest.MonkeyPatch.context() as forward_only:
        forward_only.setattr(logscan, "_stays_on_one_line", lambda regex: False)
        return scan_log(log, pattern or DEFAULT_PATTERN, names)


@pytest.mark.parametrize("seed", range(40))
def test_backward_read_agrees_with_the_forward_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = random.Random(seed)
    log = write(tmp_path, generated_log(rng))
    monkeypatch.setattr(logscan, "CARRY_MAX", 1024)  # long lines are scanned in pieces; every match fits CARRY_MAX // 16
    for pattern in PATTERNS:
        names = rng.sample(NAMES, rng.randrange(1, 4))
        reference = forward_scan(log, pattern, names)  # the whole log in one chunk
        with monkeypatch.context() as chunked:
            chunked.setattr(logscan, "CHUNK_SIZE", rng.randrange(1, 100))
            chunked.setattr(logscan, "TAIL_CHUNK_SIZE", rng.randrange(1, 100))
            forward, backward = forward_scan(log, pattern, names), scan_log(log, pattern, names)
        assert pick(forward, NAMES) == pick(reference, NAMES), pattern
        assert pick(backward, names) == pick(reference, names), (pattern, names)
        # the other names it met hold their last values in the log, too
        assert pick(backward, NAMES).items() <= pick(reference, NAMES).items(), (pattern, names)
