"""RUN_NOTE read from real train.py files, broken ones included."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Project

from ar.runnote import NOTE_MAX, read_run_note


def note_of(tmp_path: Path, source: str) -> str:
    path = tmp_path / "train.py"
    path.write_text(source, encoding="utf-8")
    return read_run_note(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("source", "note"),
    [
        ('RUN_NOTE = "try cosine lr"\n', "try cosine lr"),
        ('RUN_NOTE = "warmup 5%"  # was 10\n', "warmup 5%"),
        ("RUN_NOTE = 'single quotes'\n", "single quotes"),
        ('RUN_NOTE = "say \\"hi\\" c:\\\\tmp"\n', 'say "hi" c:\\tmp'),
        ("RUN_NOTE = 'it\\'s'  # quote\n", "it's"),
        ('RUN_NOTE = "η=3e-4 → ok ✓"\n', "η=3e-4 → ok ✓"),
        ('RUN_NOTE = r"c:\\new\\dir"  # raw\n', "c:\\new\\dir"),
        ('RUN_NOTE = u"unicode prefix"\n', "unicode prefix"),
        ('RUN_NOTE = """first line\n  second\tline\n"""  # note\nlr = 1\n', "first line second line"),
        ('RUN_NOTE: str = "annotated"  # c\n', "annotated"),
        ('RUN_NOTE = "adjacent " \'literals\'\n', "adjacent literals"),
        ('RUN_NOTE = (\n    "wrapped "  # part one\n    "over lines"  # part two\n)\n', "wrapped over lines"),
        ('RUN_NOTE = \\\n    "continued"\n', "continued"),
        ('RUN_NOTE = "use #3 config"  # not this\n', "use #3 config"),
        ('RUN_NOTE = "a\\n\\tb   c\\r\\n"\n', "a b c"),
        ('RUN_NOTE = "semicolon"; lr = 3\n', "semicolon"),
        ('RUN_NOTE = f"lr={lr}"  # formatted\n', 'f"lr={lr}"'),
        ("RUN_NOTE = NOTES[3]  # a name\n", "NOTES[3]"),
        ('RUN_NOTE = b"bytes"\n', 'b"bytes"'),
        ('RUN_NOTE = "first"\nRUN_NOTE = "second"\n', "second"),
        ('def main():\n    RUN_NOTE = "local"\nRUN_NOTE == "compare"\n', ""),
        ("import torch\nlr = 3e-4\n", ""),
        ("", ""),
    ],
)
def test_notes(tmp_path: Path, source: str, note: str) -> None:
    assert note_of(tmp_path, f'"""Train."""\nimport os\n{source}x = 1\n') == note


def test_syntax_error_elsewhere(tmp_path: Path) -> None:
    source = 'import os\ndef broken(:\n    return [\nRUN_NOTE = "still read"  # ok\nclass (\n    """\n'
    assert note_of(tmp_path, source) == "still read"


def test_broken_note_line_never_raises(tmp_path: Path) -> None:
    assert note_of(tmp_path, 'RUN_NOTE = "unterminated\nx = 1\n') == '"unterminated'
    assert note_of(tmp_path, 'RUN_NOTE = ("unclosed"\n') == '("unclosed"'
    assert note_of(tmp_path, "RUN_NOTE =\n") == ""
    assert note_of(tmp_path, "RUN_NOTE: str\n") == ""


def test_long_note_is_capped(tmp_path: Path) -> None:
    note = note_of(tmp_path, f'RUN_NOTE = "{"n" * 1000}"\n')
    assert note == "n" * NOTE_MAX
    assert len(note_of(tmp_path, f"RUN_NOTE = some_call({'x, ' * 500})\n")) <= NOTE_MAX


CONTROLS = "\x1b[31mred\x1b[0m \x07bell \x00nul back\x08space del\x7f c1\x9b"


def no_controls(text: str) -> bool:
    return not any(ord(ch) < 32 and ch != "\n" or 0x7F <= ord(ch) < 0xA0 for ch in text)


def test_control_characters_never_reach_output_or_records(project: Project) -> None:
    """RUN_NOTE and the log are the training's text: escapes, BEL, NUL, backspace and DEL in them
    are shown as visible \\xNN everywhere ar prints or records them."""
    body = f"RUN_NOTE = {CONTROLS!r}\nimport sys\nprint({CONTROLS!r}, file=sys.stderr)\nraise SystemExit('boom \\x1b]0;title\\x07')\n"
    project.train_py.write_text(body)
    run = project.ar("run")
    assert run.returncode == 0, run.stderr
    outputs = [run.stdout, project.ar("status", "--last", "3").stdout, project.ar("report").stdout,
               project.ar("tail").stdout, (project.expr / "results.tsv").read_text().replace("\t", " ")]  # tabs: the separators
    for text in outputs:
        assert no_controls(text), repr(text)
    assert "\\x1b[31mred" in run.stdout and "\\x07bell" in outputs[-1]
    result = project.result("r0001")
    assert no_controls(result["note"]) and no_controls(result["reason"] or "")
