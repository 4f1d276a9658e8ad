"""`ar run --set NAME=VALUE --note TEXT`: change top-level constants of train.py (and its
RUN_NOTE) in place, so that a knob change costs the agent one shell call instead of an edit.

Only a top-level assignment whose value is a Python literal is a knob, and only a Python literal
replaces it; everything else in the file (comments on the line included) stays byte for byte.
"""

from __future__ import annotations

import ast  # this module is imported only when --set or --note is given
import re

from ar.errors import ArError

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_settings(pairs: list[str]) -> dict[str, object]:
    """NAME=VALUE strings to {NAME: value}; VALUE must be a Python literal."""
    settings: dict[str, object] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name = name.strip()
        if not sep or not _NAME.fullmatch(name):
            raise ArError(f"--set {pair!r} is not NAME=VALUE", "e.g. --set LEARNING_RATE=3e-4 --set OPTIMIZER=\"'adamw'\"")
        try:
            value = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise ArError(f"--set {name}: {text!r} is not a Python literal",
                          f"quote a string twice, e.g. --set {name}=\"'{text.strip()}'\"; numbers, True/False/None, lists and dicts work as they are") from None
        settings[name] = value
    return settings


def apply_settings(source: str, settings: dict[str, object], note: str | None) -> str:
    """The source with each named constant's value (and RUN_NOTE, when note is given) replaced."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ArError(f"train.py does not parse (line {exc.lineno}: {exc.msg}), so --set cannot change it",
                      "fix the file with an edit, or restore the best with `ar session --resume revert-best`") from None
    wanted = dict(settings)
    if note is not None:
        wanted["RUN_NOTE"] = " ".join(note.split())
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        target, value = _assignment(node)
        if target in wanted:
            found[target] = value  # the last assignment is the one Python keeps
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line.encode()))
    data = source.encode()
    edits = []
    for name, value in wanted.items():
        node = found.get(name)
        if node is None:
            if name == "RUN_NOTE":
                continue  # added on top below
            knobs = [name for name, value in map(_assignment, tree.body) if name and _literal(value)]
            raise ArError(f"train.py has no top-level constant {name}",
                          f"use one of: {', '.join(knobs[:12]) or 'none'}; change code with an edit")
        if not _literal(node):
            raise ArError(f"{name} in train.py is not a literal constant (it is computed)", "change it with an edit")
        start = offsets[node.lineno - 1] + node.col_offset
        end = offsets[node.end_lineno - 1] + node.end_col_offset
        edits.append((start, end, repr(value).encode()))
    for start, end, text in sorted(edits, reverse=True):
        data = data[:start] + text + data[end:]
    result = data.decode()
    if note is not None and "RUN_NOTE" not in found:
        result = f"RUN_NOTE = {wanted['RUN_NOTE']!r}\n" + result
    return result


def _assignment(node) -> tuple[str | None, object]:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id, node.value
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        return node.target.id, node.value
    return None, None


def _literal(node) -> bool:
    try:
        ast.literal_eval(node)
        return True
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
