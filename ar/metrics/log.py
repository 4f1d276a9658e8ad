"""Metrics from a training log: the last value of each `name=value` / `name: value`, read in bounded memory."""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import NamedTuple

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
# Longest unfinished line carried into the next chunk; a longer one is scanned in pieces, and a match
# longer than CARRY_MAX // 16 that straddles a piece boundary may then be cut short.
CARRY_MAX = 64 << 10

_NEEDS_GROUPS = "log pattern needs a {name} placeholder or (?P<name>...) and (?P<value>...) groups"


class Matcher(NamedTuple):
    regex: re.Pattern[bytes]
    name: bytes | None  # the fixed name of a {name} pattern; None: the regex's `name` group
    value: int | str  # the group holding the value


_DEFAULT = Matcher(re.compile(DEFAULT_PATTERN.encode()), None, "value")


def compile_pattern(pattern: str, names: Iterable[str] = ()) -> list[Matcher]:
    """Matchers for a user log pattern (one per name for a {name} pattern); ValueError if it is unusable."""
    if "{name}" not in pattern:
        regex = _compile(pattern)
        if not {"name", "value"} <= regex.groupindex.keys():
            raise ValueError(_NEEDS_GROUPS)
        return [Matcher(regex, None, "value")]
    # Validates even when no names are asked for; as long as `{name}`, so error positions fit the user's text.
    _placeholder_matcher(pattern, "_name_")
    return [_placeholder_matcher(pattern, name) for name in dict.fromkeys(names)]


def scan_log(path: Path, pattern: str | None = None, names: Iterable[str] | None = None) -> dict[str, float]:
    """The last value of each metric in the log (only `names` when given), nan/inf kept; {} if it is missing."""
    wanted = None if names is None else list(dict.fromkeys(names))
    matchers = [_DEFAULT] if pattern is None else compile_pattern(pattern, wanted or ())
    if not matchers or wanted == []:
        return {}
    try:
        found = _scan_file(path, matchers)
    except OSError:
        return {}
    metrics = {name.decode("utf-8", "replace"): float(value) for name, value in found.items()}
    if wanted is None:
        return metrics
    return {name: metrics[name] for name in wanted if name in metrics}


def _compile(pattern: str) -> re.Pattern[bytes]:
    try:
        return re.compile(pattern.encode(), re.MULTILINE)
    except re.error as e:
        raise ValueError(f"log pattern is not a valid regex ({e}); fix it (a literal ( [ . * + ? needs a \\)") from None


def _placeholder_matcher(pattern: str, name: str) -> Matcher:
    regex = _compile(pattern.replace("{name}", re.escape(name)))
    if "value" in regex.groupindex:
        return Matcher(regex, name.encode(), "value")
    if regex.groups:
        return Matcher(regex, name.encode(), 1)
    raise ValueError("log pattern with {name} needs a group around the value, e.g. {name}=(\\S+) or (?P<value>...)")


def _scan_file(path: Path, matchers: list[Matcher]) -> dict[bytes, bytes]:
    chunk_size, carry_max = CHUNK_SIZE, CARRY_MAX
    context = carry_max // 16  # room kept before a piece boundary, for lookbehinds
    found: dict[bytes, bytes] = {}
    # The unfinished last line (or the end of a very long one), led by the newline that ended the line before.
    carry = b"\n"
    starts = [0] * len(matchers)  # where each matcher resumes in `carry`, past what it already took
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(chunk_size):
            data = carry + chunk
            done = data.rfind(b"\n", 1) + 1
            if done:
                for matcher, start in zip(matchers, starts):
                    _scan(matcher, data, start, done, found)
                data = data[done - 1 :]
                starts = [0] * len(matchers)
            if len(data) > carry_max:
                # A very long line: take the matches that start before `cut` (all complete, barring one
                # longer than `context`) and carry only the rest.
                cut = len(data) - context
                ends = [_scan_before(matcher, data, start, cut, found) for matcher, start in zip(matchers, starts)]
                base = cut - context
                data = data[base:]
                starts = [max(context, end - base) for end in ends]
            carry = data
    for matcher, start in zip(matchers, starts):
        _scan(matcher, carry, start, len(carry), found)
    return found


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
