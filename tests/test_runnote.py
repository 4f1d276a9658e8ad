"""RUN_NOTE read from real train.py files, broken ones included."""
from __future__ import annotations

from pathlib import Path

import pytest

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
