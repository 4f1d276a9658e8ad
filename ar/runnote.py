"""The RUN_NOTE of a train.py, read without importing or parsing the file (it may be broken elsewhere)."""
from __future__ import annotations

import io
import re

from ar.text import printable

NOTE_MAX = 200

_ASSIGNMENT = re.compile(r"^RUN_NOTE[ \t]*(?::|=(?!=))", re.MULTILINE)  # module level: column 0


def read_run_note(source: str) -> str:
    """The note single-lined and capped at NOTE_MAX chars; the raw right-hand side if it is not a string literal."""
    # The last assignment is the one Python would keep.
    for match in reversed(list(_ASSIGNMENT.finditer(source))):
        try:
            value = _value(source[match.start() :])
        except Exception:  # the statement itself is broken beyond tokenizing: show what follows the `=`
            value = source[match.start() :].split("\n", 1)[0].partition("=")[2]
        if value is not None:
            return " ".join(printable(value).split())[:NOTE_MAX].rstrip()
    return ""


def _value(text: str) -> str | None:
    """The value assigned by the statement `text` starts with; None for a bare annotation."""
    # Imported here: a few ms that only this function needs.
    import ast
    import tokenize

    read = io.StringIO(text).readline
    lines: list[str] = []  # the physical lines read so far, to cut the raw text out of

    def readline() -> str:
        lines.append(read())
        return lines[-1]

    tokens = tokenize.generate_tokens(readline)
    next(tokens)  # RUN_NOTE
    depth = 0  # an annotation or value may hold brackets with `=` or `;` inside
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            return None
        if tok.type == tokenize.OP:
            depth += _nesting(tok.string)
            if depth == 0 and tok.string == ";":
                return None
            if depth == 0 and tok.string == "=":
                break
    first = last = None
    comments: dict[int, int] = {}  # row -> column where its comment starts
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.ENDMARKER):
            break
        if tok.type == tokenize.OP:
            depth += _nesting(tok.string)
            if depth == 0 and tok.string == ";":
                break
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.start[1]
        elif tok.type not in (tokenize.NL, tokenize.INDENT, tokenize.DEDENT):
            first = first or tok.start
            last = tok.end
    if first is None or last is None:
        return ""
    (row0, col0), (row1, col1) = first, last
    rows = []
    for row in range(row0, row1 + 1):
        line = lines[row - 1]
        end = col1 if row == row1 else comments.get(row, len(line))
        rows.append(line[col0 if row == row0 else 0 : end].rstrip("\r\n"))
    raw = "\n".join(rows)
    try:
        value = ast.literal_eval(raw)
    except Exception:  # not a literal (an f-string, a name, a call): the note is the source text
        return raw
    return value if isinstance(value, str) else raw


def _nesting(op: str) -> int:
    return 1 if op in ("(", "[", "{") else -1 if op in (")", "]", "}") else 0
