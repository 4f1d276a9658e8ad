"""The tail of real log files, focused on the last traceback."""
from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

from ar.tailback import MAX_LINE_CHARS, MAX_LINES, log_tail

TRACEBACK = [
    "Traceback (most recent call last):",
    '  File "train.py", line 10, in <module>',
    "    main()",
    '  File "train.py", line 7, in main',
    '    raise ValueError("boom")',
    "ValueError: boom",
]


def write(tmp_path: Path, lines: list[str], end: str = "\n") -> Path:
    path = tmp_path / "run.log"
    path.write_text(end.join(lines) + end)
    return path


def test_simple_traceback(tmp_path: Path) -> None:
    log = write(tmp_path, ["step 1 loss=2.0", "step 2 loss=1.9", *TRACEBACK, "", "exit code 1"])
    assert log_tail(log) == TRACEBACK


def test_crlf_and_trailing_spaces_are_stripped(tmp_path: Path) -> None:
    log = write(tmp_path, ["step 1   ", *TRACEBACK], end="\r\n")
    assert log_tail(log) == TRACEBACK


def test_chained_exceptions_give_the_last_block(tmp_path: Path) -> None:
    first = ["Traceback (most recent call last):", '  File "a.py", line 1, in <module>', "KeyError: 'x'"]
    log = write(
        tmp_path,
        [*first, "", "During handling of the above exception, another exception occurred:", "", *TRACEBACK],
    )
    assert log_tail(log) == TRACEBACK


def test_torchrun_prefixed_traceback(tmp_path: Path) -> None:
    rank0 = [f"[rank0]: {line}" for line in TRACEBACK]
    interleaved = [rank0[0], rank0[1], "[rank1]: step 5 loss=1.0", *rank0[2:], "W1122 elastic: sending SIGTERM"]
    launcher = [
        "Traceback (most recent call last):",
        '  File "/usr/bin/torchrun", line 8, in <module>',
        "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: ",
        "============================================================",
        "train.py FAILED",
    ]
    log = write(tmp_path, ["[rank0]: step 5 loss=1.0", *interleaved, *launcher])
    assert log_tail(log) == rank0
    # Without a worker traceback the launcher's own is still the last one.
    assert log_tail(write(tmp_path, ["starting", *launcher])) == [*launcher[:2], launcher[2].rstrip()]


def test_long_traceback_keeps_header_and_ends_with_error(tmp_path: Path) -> None:
    frames = [f'  File "lib.py", line {i}, in f{i}\n    f{i + 1}()' for i in range(200)]
    lines = [TRACEBACK[0], *"\n".join(frames).split("\n"), "RecursionError: maximum recursion depth exceeded"]
    log = write(tmp_path, ["before", *lines, "after"])
    got = log_tail(log, 10)
    assert got == [lines[0], "...", *lines[-8:]]
    assert len(log_tail(log, 1000)) == MAX_LINES
    assert log_tail(log, 2) == [lines[0], lines[-1]]
    assert log_tail(log, 0) == log_tail(log, 1) == [lines[-1]]


def test_no_traceback_gives_last_lines(tmp_path: Path) -> None:
    lines = [f"step {i} loss={i / 10}" for i in range(100)]
    log = write(tmp_path, [*lines, "", ""])
    assert log_tail(log, 5) == lines[-5:]
    assert log_tail(log) == lines[-30:]
    assert log_tail(log, -3) == lines[-1:]


def test_progress_bar_redraws_show_the_last_state(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_text("epoch 1\n" + "".join(f"\r{i}%|{'#' * (i // 10)}|" for i in range(101)) + "\n")
    assert log_tail(log) == ["epoch 1", "100%|##########|"]


def test_lines_are_cut(tmp_path: Path) -> None:
    log = write(tmp_path, ["x" * 1000, "short", "ValueError: " + "y" * 500])
    got = log_tail(log)
    assert got[1] == "short"
    assert [len(line) for line in got] == [MAX_LINE_CHARS, 5, MAX_LINE_CHARS]
    assert got[0].endswith("…") and got[2].startswith("ValueError: y")


def test_huge_log_reads_only_the_tail(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    old = "\n".join(["Traceback (most recent call last):", '  File "x.py", line 1', "OldError: long ago"])
    with log.open("w") as f:
        f.write(old + "\n")
        f.write(("step 1 loss=1.0 " * 8 + "\n") * 300_000)  # ~40 MB
        f.write("done\n")
    tracemalloc.start()
    started = time.perf_counter()
    try:
        got = log_tail(log, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert got == [("step 1 loss=1.0 " * 8).rstrip()] * 2 + ["done"]
    assert peak < 4 << 20, peak
    assert time.perf_counter() - started < 1


def test_non_utf8_and_a_single_huge_line(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    log.write_bytes(b"\xff" * 300 + b"\nend \xe9\n")
    assert log_tail(log) == ["\ufffd" * (MAX_LINE_CHARS - 1) + "…", "end \ufffd"]
    log.write_bytes(b"\xff" * (1 << 20) + b"\nend \xe9\n")
    assert log_tail(log) == ["end \ufffd"]  # the line the read started in is dropped: it is cut
    log.write_bytes(b"z" * (1 << 20))
    assert log_tail(log) == ["z" * (MAX_LINE_CHARS - 1) + "…"]


def test_missing_file(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "nope.log") == []
    assert log_tail(write(tmp_path, [""])) == []
