"""Metrics from a training log: the last value of each `name=value` / `name: value`, read in bounded memory.

The metrics a run is judged on are printed last, so the wanted names are looked for backwards from the end of
the log, a chunk at a time, stopping once each has been seen; only a name the log never shows costs a read of
the whole log. Without wanted names the log is scanned forwards, as it was written.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

# CPython's own regex parser (private, so named since 3.11): tells whether a pattern's matches stay on one line
from re import _constants as sre
from re import _parser

# A name is a whole token (never the tail of `xval_loss` or `--lr`): the match starts at the byte before it,
# an ASCII byte that cannot be in a name (the scan puts a newline before the file). That positive class lets
# the regex engine skip through words: 1.5-2x faster than a lookbehind. A quote may close the name, so JSON
# and Python dict lines (`{"loss": 0.5}`) work too, and so does a quoted value (transformers 5 logs
# `{'loss': '3.992'}`); the value stays on the same line.
DEFAULT_PATTERN = (
    r"[\x00-\x2c\x3a-\x40\x5b-\x5e\x60\x7b-\x7f](?P<name>[A-Za-z_][\w/.\-]*+)['\"]?[ \t]*+[=:][ \t]*+['\"]?"
    r"(?P<value>[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|(?i:nan|inf(?:inity)?)(?!\w)))"
)

CHUNK_SIZE = 1 << 20
# A read back from the end: the wanted names are most often on the last lines, and a scan costs ~35 ms a MiB.
TAIL_CHUNK_SIZE = 64 << 10
# Longest unfinished line carried into the next chunk; a longer one is scanned in pieces, and a match
# longer than CARRY_MAX // 16 that straddles a piece boundary may then be cut short.
CARRY_MAX = 64 << 10

_NEEDS_GROUPS = "log pattern needs a {name} placeholder or (?P<name>...) and (?P<value>...) groups"
_NEWLINE = ord("\n")
_NEWLINE_FREE_CATEGORIES = {
    sre.CATEGORY_DIGIT, sre.CATEGORY_WORD, sre.CATEGORY_NOT_SPACE, sre.CATEGORY_NOT_LINEBREAK,
    sre.CATEGORY_UNI_DIGIT, sre.CATEGORY_UNI_WORD, sre.CATEGORY_UNI_NOT_SPACE, sre.CATEGORY_UNI_NOT_LINEBREAK,
    sre.CATEGORY_LOC_WORD,
}


class Matcher(NamedTuple):
    regex: re.Pattern[bytes]
    name: bytes | None  # the fixed name of a {name} pattern; None: the regex's `name` group
    value: int | str  # the group holding the value
    one_line: bool  # no match can span lines: a log cut at line breaks yields the same matches


# The one newline it can take is the line break before a name (a test holds this against _stays_on_one_line).
_DEFAULT = Matcher(re.compile(DEFAULT_PATTERN.encode()), None, "value", one_line=True)


def compile_pattern(pattern: str, names: Iterable[str] = ()) -> list[Matcher]:
    """Matchers for a user log pattern (one per name for a {name} pattern); ValueError if it is unusable."""
    if "{name}" not in pattern:
        regex = _compile(pattern)
        if not {"name", "value"} <= regex.groupindex.keys():
            raise ValueError(_NEEDS_GROUPS)
        return [_matcher(regex, None, "value")]
    # Validates even when no names are asked for; as long as `{name}`, so error positions fit the user's text.
    _placeholder_matcher(pattern, "_name_")
    return [_placeholder_matcher(pattern, name) for name in dict.fromkeys(names)]


def scan_log(path: Path, pattern: str | None = None, names: Iterable[str] | None = None) -> dict[str, float]:
    r"""The last value of each metric in the log, nan/inf kept; {} if it is missing.

    With `names`, the log is read backwards from its end until each name has been seen, or to its start if
    one never is. The result holds every name met in the part read, wanted or not: read from the end, that
    part holds each one's last occurrence in the log. Without `names` the whole log is scanned forwards; so
    it is for a user pattern whose matches could span lines (one with `\s`, `\n`, `[^x]`, `(?s).`, `\A`,
    `\Z`), since only a pattern held to one line finds the same matches in a log cut at line breaks
    (`[ \t]` for spaces keeps a pattern fast). Only the bytes there at open are read, so a log still being
    written is fine.
    """
    wanted = None if names is None else list(dict.fromkeys(names))
    matchers = [_DEFAULT] if pattern is None else compile_pattern(pattern, wanted or ())
    if not matchers or wanted == []:
        return {}
    try:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if wanted is None or not all(matcher.one_line for matcher in matchers):
                found = _scan_forward(f, matchers, 0, size)
            else:
                found = _scan_backward(f, matchers, size, {name.encode() for name in wanted})
    except OSError:
        return {}
    return {name.decode("utf-8", "replace"): float(value) for name, value in found.items()}


def _compile(pattern: str) -> re.Pattern[bytes]:
    try:
        return re.compile(pattern.encode(), re.MULTILINE)
    except re.error as e:
        raise ValueError(f"log pattern is not a valid regex ({e}); fix it (a literal ( [ . * + ? needs a \\)") from None


def _matcher(regex: re.Pattern[bytes], name: bytes | None, value: int | str) -> Matcher:
    return Matcher(regex, name, value, _stays_on_one_line(regex))


def _placeholder_matcher(pattern: str, name: str) -> Matcher:
    regex = _compile(pattern.replace("{name}", re.escape(name)))
    if "value" in regex.groupindex:
        return _matcher(regex, name.encode(), "value")
    if regex.groups:
        return _matcher(regex, name.encode(), 1)
    raise ValueError("log pattern with {name} needs a group around the value, e.g. {name}=(\\S+) or (?P<value>...)")


def _scan_forward(f: BinaryIO, matchers: list[Matcher], start: int, end: int) -> dict[bytes, bytes]:
    """The last match of each name in bytes [start, end) of the log; `start` begins a line."""
    chunk_size, carry_max = CHUNK_SIZE, CARRY_MAX
    context = carry_max // 16  # room kept before a piece boundary, for lookbehinds
    found: dict[bytes, bytes] = {}
    # The unfinished last line (or the end of a very long one), led by the newline that ended the line before.
    carry = b"\n"
    starts = [0] * len(matchers)  # where each matcher resumes in `carry`, past what it already took
    f.seek(start)
    left = end - start
    while left > 0 and (chunk := f.read(min(chunk_size, left))):
        left -= len(chunk)
        data = carry + chunk
        done = data.rfind(b"\n", 1) + 1
        if done:
            for matcher, resume in zip(matchers, starts):
                _scan(matcher, data, resume, done, found)
            data = data[done - 1 :]
            starts = [0] * len(matchers)
        if len(data) > carry_max:
            # A very long line: take the matches that start before `cut` (all complete, barring one
            # longer than `context`) and carry only the rest.
            cut = len(data) - context
            ends = [_scan_before(matcher, data, resume, cut, found) for matcher, resume in zip(matchers, starts)]
            base = cut - context
            data = data[base:]
            starts = [max(context, end - base) for end in ends]
        carry = data
    for matcher, resume in zip(matchers, starts):
        _scan(matcher, carry, resume, len(carry), found)
    return found


def _scan_backward(f: BinaryIO, matchers: list[Matcher], size: int, wanted: set[bytes]) -> dict[bytes, bytes]:
    """The last match of each name in the chunks read from the end of the log until every wanted name is seen.

    A read is a chunk and the byte before it. The lines that start in it are scanned as one block led by the
    newline before them, the same text the forward scan gives a line, so a one-line pattern finds the same
    matches; the line the read cuts is read again with the next chunk. A line longer than a chunk is
    scanned forwards (in pieces, if it is very long) from where it starts.
    """
    found: dict[bytes, bytes] = {}
    end = size  # the log from `end` on has been scanned; `end` is where a line starts, or the end
    while end > 0 and not wanted <= found.keys():
        start = max(0, end - TAIL_CHUNK_SIZE - 1)
        data = _read(f, start, end)
        # the newline before the first line that starts here (one in the last byte ends a line, it leads none)
        lead = data.find(b"\n", 0, len(data) - 1)
        if start == 0:
            earlier, end = _scan_block(matchers, b"\n" + data), 0  # the newline the forward scan puts first
        elif lead >= 0:
            earlier, end = _scan_block(matchers, data[lead:]), start + lead + 1
        else:
            line_start = _line_start(f, start)
            earlier, end = _scan_forward(f, matchers, line_start, end), line_start
        _keep_later(found, earlier)
        matchers = [matcher for matcher in matchers if matcher.name not in found]  # a {name} matcher is done
    return found


def _scan_block(matchers: list[Matcher], block: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    for matcher in matchers:
        _scan(matcher, block, 0, len(block), found)
    return found


def _keep_later(found: dict[bytes, bytes], earlier: dict[bytes, bytes]) -> None:
    """Adds what an earlier part of the log holds; a value `found` later in the log wins."""
    for name, value in earlier.items():
        found.setdefault(name, value)


def _read(f: BinaryIO, start: int, end: int) -> bytes:
    f.seek(start)
    return f.read(end - start)


def _line_start(f: BinaryIO, pos: int) -> int:
    """Where the line holding the byte before `pos` starts, searching back a chunk at a time."""
    while pos > 0:
        start = max(0, pos - CHUNK_SIZE)
        newline = _read(f, start, pos).rfind(b"\n")
        if newline >= 0:
            return start + newline + 1
        pos = start
    return 0


def _scan(matcher: Matcher, data: bytes, pos: int, endpos: int, found: dict[bytes, bytes]) -> None:
    if matcher is _DEFAULT:
        # findall yields (name, value) pairs and dict.update keeps the last: no per-match Python code
        found.update(matcher.regex.findall(data, pos, endpos))
        return
    for match in matcher.regex.finditer(data, pos, endpos):
        _take(matcher, match, found)


def _scan_before(matcher: Matcher, data: bytes, pos: int, cut: int, found: dict[bytes, bytes]) -> int:
    """Takes the matches starting before `cut`; returns where the last one ended (else `pos`)."""
    end = pos
    for match in matcher.regex.finditer(data, pos):
        if match.start() >= cut:
            break
        _take(matcher, match, found)
        end = match.end()
    return end


def _take(matcher: Matcher, match: re.Match[bytes], found: dict[bytes, bytes]) -> None:
    name = matcher.name if matcher.name is not None else match.group("name")
    value = match.group(matcher.value)
    if name is None or value is None:
        return
    try:
        float(value)
    except ValueError:  # a user pattern's value group caught something that is not a number
        return
    found[name] = value


def _stays_on_one_line(regex: re.Pattern[bytes]) -> bool:
    """Whether a match can hold a newline only as its first byte (the line break before a name, as the default
    pattern takes) and no part of it looks past one or at the ends of the text: then text cut just after a
    newline, each piece led by that newline, yields the same matches as the whole."""
    items = list(_parser.parse(regex.pattern, regex.flags))
    if items and items[0][0] in (sre.LITERAL, sre.NOT_LITERAL, sre.ANY, sre.IN):
        items = items[1:]
    return not _reaches_newline(items, regex.flags)


def _reaches_newline(items: Iterable[tuple], flags: int) -> bool:
    """Whether any of these parsed regex items can match or see a newline, or an end of the text."""
    for op, arg in items:
        if op is sre.LITERAL:
            reaches = arg == _NEWLINE
        elif op is sre.NOT_LITERAL:
            reaches = arg != _NEWLINE
        elif op is sre.ANY:
            reaches = bool(flags & re.DOTALL)
        elif op is sre.IN:
            reaches = _class_has_newline(arg)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            reaches = _reaches_newline(arg[2], flags)
        elif op is sre.SUBPATTERN:
            _, add, remove, sub = arg
            reaches = _reaches_newline(sub, (flags | add) & ~remove)
        elif op is sre.BRANCH:
            reaches = any(_reaches_newline(alternative, flags) for alternative in arg[1])
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            reaches = _reaches_newline(arg[1], flags)
        elif op is sre.ATOMIC_GROUP:
            reaches = _reaches_newline(arg, flags)
        elif op is sre.GROUPREF_EXISTS:
            reaches = _reaches_newline(arg[1], flags) or _reaches_newline(arg[2] or (), flags)
        elif op is sre.AT:
            # `^` and `$` are line anchors under MULTILINE; `\A`, `\Z` (and `^`, `$` without it) see the text's ends
            ends = (sre.AT_BEGINNING, sre.AT_END) if not flags & re.MULTILINE else ()
            reaches = arg in (sre.AT_BEGINNING_STRING, sre.AT_END_STRING, *ends)
        else:  # a back reference repeats a group checked on its own; anything unknown is taken as reaching
            reaches = op is not sre.GROUPREF
        if reaches:
            return True
    return False


def _class_has_newline(items: list[tuple]) -> bool:
    negated = bool(items) and items[0][0] is sre.NEGATE
    listed = any(_class_item_has_newline(op, arg) for op, arg in items if op is not sre.NEGATE)
    return listed != negated


def _class_item_has_newline(op: Any, arg: Any) -> bool:
    if op is sre.LITERAL:
        return arg == _NEWLINE
    if op in (sre.RANGE, sre.RANGE_UNI_IGNORE):
        return arg[0] <= _NEWLINE <= arg[1]
    if op is sre.CATEGORY:
        return arg not in _NEWLINE_FREE_CATEGORIES
    return True
