"""The train.py of each entry pattern (SPEC §8): how it drives the host project's own code
without editing it, knobs at the top (RUN_NOTE first).

- argparse-cli: CLI_OVERRIDES merged over the fixed arguments into sys.argv, then the host's
  script or module runs as __main__ (argparse, click, HfArgumentParser alike).
- hydra: HYDRA_OVERRIDES for a @hydra.main app, its output directory inside the run's directory.
- function: KWARGS passed to module:function; what it returns is printed as metrics.
- script: the host script copied, its constants and option defaults hoisted to the top.
"""

from __future__ import annotations

import ast
import json
import math
import os
import re
from pathlib import Path
from typing import NamedTuple

from ar import host_source
from ar.errors import ArError
from ar.render import render

PATTERNS = ("argparse-cli", "hydra", "function", "script")
# The hydra pattern's checkpoints when --checkpoint-glob is not given (the others: $AR_CKPT_DIR).
HYDRA_CHECKPOINT_GLOB = "{run_dir}/hydra/**/checkpoints"
_MAX_LISTED = 40  # options listed in train.py's header comment
_MAX_DEPTH = 8  # nesting of --cli-args-json values
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]*")
# ar sets AR_SEED only with --baseline-repeats or --confirm: otherwise runs of the same code stay alike.
_SEED_HINT = "gets $AR_SEED, a new seed each run, under --baseline-repeats / --confirm"
_CODING = re.compile(rb"^[ \t\f]*#.*?coding[:=][ \t]*[-\w.]+")  # PEP 263; train.py is written as UTF-8
_FIX = "give the host's script relative to the project root (e.g. --entry scripts/train.py), a module (mypkg.train) or module:function"


class HostEntry(NamedTuple):
    pattern: str
    entry: str  # as recorded: a path relative to the project root (has a / or ends .py), a module, or either :function
    file: Path  # the host file it names
    source: host_source.HostSource


class Scaffold(NamedTuple):
    text: str  # train.py
    checkpoint_glob: str | None


def resolve(root: Path, entry: str, pattern: str | None) -> HostEntry:
    """The host entry `ar init --entry` names, checked against the project; the pattern detected
    from the source when not given."""
    if pattern is not None and pattern not in PATTERNS:
        raise ArError(f"--entry-pattern {pattern!r} is not known", f"use one of: {', '.join(PATTERNS)}")
    entry = entry.strip()
    if any(ord(ch) < 32 or 0xD800 <= ord(ch) <= 0xDFFF for ch in entry) or not entry:
        raise ArError(f"--entry {entry!r} is not a usable name", _FIX)
    where, colon, function = entry.rpartition(":") if ":" in entry else (entry, "", "")
    if colon and not function.isidentifier():
        raise ArError(f"--entry {entry!r}: {function!r} is not a function name", "give module:function, e.g. --entry mypkg.train:main")
    if pattern == "function" and not colon:
        raise ArError(f"--entry-pattern function needs --entry module:function, not {entry!r}", "e.g. --entry mypkg.train:main")
    if colon and pattern not in (None, "function"):
        raise ArError(f"--entry {entry!r} names a function, which --entry-pattern {pattern} does not call", "use --entry-pattern function, or name the script")
    file, recorded, is_module = _host_file(root, where, for_function=bool(colon))
    source = host_source.read(file)
    if source is None:
        raise ArError(f"--entry {entry!r}: {recorded} does not parse as Python", "fix the host file, or name another --entry")
    chosen = pattern or ("function" if colon else host_source.detect_pattern(source.tree))
    if chosen == "script" and is_module and pattern is None:
        chosen = "argparse-cli"  # a module runs as `python -m` (its relative imports work), not as a copy
    if chosen == "function":
        node = host_source.function_def(source.tree, function)
        if node is None:
            raise ArError(f"--entry {entry!r}: {recorded} defines no function {function}", "name a module-level function of the host")
        if isinstance(node, ast.AsyncFunctionDef):
            raise ArError(f"--entry {entry!r}: {function} is async", "name a plain function that runs the training (or wrap it in one)")
        recorded = f"{recorded}:{function}"
    elif chosen in ("hydra", "script"):
        recorded = _as_path(file.relative_to(root).as_posix())  # both run the file itself
    return HostEntry(chosen, recorded, file, source)


def scaffold(host: HostEntry, cli_args_json: str | None, metric: str) -> Scaffold:
    fixed = _fixed_args(host.pattern, cli_args_json)
    tree = host.source.tree
    if host.pattern == "script":
        return Scaffold(hoist(host.source.text, host.entry), None)
    if host.pattern == "argparse-cli":
        options = host_source.cli_options(tree)
        hf_trainer = host_source.uses_hf_training_arguments(tree)
        if hf_trainer:
            ckpt, seed = "--output_dir", "--seed"  # TrainingArguments fields
        else:
            ckpt, seed = (_name(host_source.pick(options, names)) for names in (host_source.CHECKPOINT_OPTIONS, host_source.SEED_OPTIONS))
        shown = [f"{o.name} {o.default or ''}".rstrip() for o in options]
        if hf_trainer:
            shown.append("and every TrainingArguments field: --learning_rate, --warmup_ratio, --weight_decay, --per_device_train_batch_size, ...")
        is_path = _is_path(host.entry)
        text = render("entry_argparse_cli.py", {
            "SHOWN": host.entry if is_path else f"-m {host.entry}",
            "ENTRY": repr(host.entry), "ENTRY_KIND": "the host script" if is_path else "the host module, run as `python -m`",
            "FIXED_ARGS": _literal(fixed), "CKPT_OPTION": repr(ckpt), "SEED_OPTION": repr(seed), "SEED_HINT": _SEED_HINT,
            "OPTIONS_COMMENT": _listing("The host's options (from its source), for CLI_OVERRIDES:", shown),
        })
        return Scaffold(text, None)
    if host.pattern == "hydra":
        config_dir = host_source.hydra_config_dir(tree)
        groups = host_source.config_groups(host.file.parent / config_dir) if config_dir else {}
        seed = "seed" if config_dir and _declares_seed(host.file.parent / config_dir) else None
        text = render("entry_hydra.py", {
            "ENTRY_SHOWN": host.entry, "ENTRY": repr(host.entry), "FIXED_ARGS": _literal(fixed), "SEED_OPTION": repr(seed), "SEED_HINT": _SEED_HINT,
            "OPTIONS_COMMENT": _listing(f"Config groups ({config_dir}/), for HYDRA_OVERRIDES:", [f"{g}: {', '.join(o)}" for g, o in groups.items()]),
        })
        return Scaffold(text, HYDRA_CHECKPOINT_GLOB)
    node = host_source.function_def(tree, host.entry.rpartition(":")[2])
    params = host_source.function_params(node)
    if fixed and not node.args.kwarg:
        unknown = sorted(set(fixed) - {p.name for p in params})
        if unknown:
            raise ArError(f"--cli-args-json names {', '.join(unknown)}, which {host.entry} does not take", f"use its parameters: {', '.join(p.name for p in params)}")
    ckpt, seed = (_name(host_source.pick(params, names)) for names in (host_source.CHECKPOINT_OPTIONS, host_source.SEED_OPTIONS))
    text = render("entry_function.py", {
        "FIXED_ARGS": _literal(fixed), "ENTRY": repr(host.entry), "METRIC": repr(metric), "METRIC_SHOWN": metric,
        "CKPT_OPTION": repr(ckpt), "SEED_OPTION": repr(seed), "SEED_HINT": _SEED_HINT,
        "OPTIONS_COMMENT": _listing("Its parameters (from its source), for KWARGS:", [f"{p.name}={p.default}" if p.default else p.name for p in params]),
    })
    return Scaffold(text, None)


def hoist(source: str, entry: str) -> str:
    """The host script as train.py: its module-level constants and literal option defaults
    become knobs at the top (RUN_NOTE first), the rest of its code follows unchanged, run as if
    it were the host file (`__file__`, imports). Nothing moves whose meaning could change: a
    constant bound anywhere else too, or any constant after a `from x import *`."""
    tree = ast.parse(source)
    data = source.encode("utf-8")
    starts = _line_offsets(data)

    def segment(node: ast.AST) -> str:
        return data[_offset(starts, node.lineno, node.col_offset) : _offset(starts, node.end_lineno, node.end_col_offset)].decode()

    head_end = _head_end(tree, starts)  # a docstring and `from __future__` stay first
    star = any(isinstance(n, ast.ImportFrom) and any(a.name == "*" for a in n.names) for n in ast.walk(tree))
    bound = _bindings(tree)
    knobs: list[tuple[str, str, str]] = []  # (name, value, where it came from)
    options: list[tuple[str, host_source.Option]] = []  # knobs that came from an option, with it
    edits: list[tuple[int, int, bytes]] = []
    if not star:
        for node in tree.body:
            name = _constant(node, bound)
            if name and starts[node.lineno - 1] >= head_end and _whole_lines(node, data, starts):
                knobs.append((name, segment(node.value), f"line {node.lineno}"))
                edits.append((starts[node.lineno - 1], starts[node.end_lineno], b""))
        taken = set(bound) | {k[0] for k in knobs} | {"RUN_NOTE"}
        for flag, default in host_source.option_calls(tree):
            option = host_source.Option(flag, host_source.literal_text(default))
            name = re.sub(r"\W", "_", option.key).upper()
            if option.default is None or not _CONSTANT.fullmatch(name) or name in taken:
                continue
            taken.add(name)
            knobs.append((name, segment(default), f"{flag} default"))
            options.append((name, option))
            edits.append((_offset(starts, default.lineno, default.col_offset), _offset(starts, default.end_lineno, default.end_col_offset), name.encode()))
    body = bytearray(data)
    for begin, end, text in sorted(edits, reverse=True):
        body[begin:end] = text
    head = b"".join(line for line in bytes(body[:head_end]).splitlines(keepends=True) if not _CODING.match(line)).decode()
    rest = bytes(body[head_end:]).decode()
    lines = [head.rstrip("\n") + "\n\n" if head.strip() else ""]
    lines.append('RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)\n')
    if knobs:
        lines.append(f"# Knobs hoisted from {_shown(entry)}, where they stood:\n")
        lines += [f"{name} = {value}  # {where}\n" for name, value, where in knobs]
    lines.append(render("entry_script_preamble.py", {"ENTRY": repr(entry), "ENTRY_SHOWN": _shown(entry)}))
    lines += _given_by_ar(options)
    return "".join(lines) + rest


def _given_by_ar(options: list[tuple[str, host_source.Option]]) -> list[str]:
    """`if` blocks that point a hoisted checkpoint-directory option at $AR_CKPT_DIR and a seed
    option at $AR_SEED when ar sets them: the knobs stay literal constants that `run --set` changes."""
    def knob(names: tuple[str, ...], kind: type) -> str | None:
        by_key = {o.key: k for k, o in options if type(ast.literal_eval(o.default)) is kind}
        return next((by_key[key] for key in names if key in by_key), None)

    lines = []
    if ckpt := knob(host_source.CHECKPOINT_OPTIONS, str):
        lines.append(f'if _ar_os.environ.get("AR_CKPT_DIR"):  # ar keeps the run\'s checkpoint there\n    {ckpt} = _ar_os.environ["AR_CKPT_DIR"]\n')
    if seed := knob(host_source.SEED_OPTIONS, int):
        lines.append(f'if _ar_os.environ.get("AR_SEED"):  # set under --baseline-repeats / --confirm: a new seed each run\n    {seed} = int(_ar_os.environ["AR_SEED"])\n')
    return [*lines, "\n"] if lines else []


def _host_file(root: Path, where: str, for_function: bool) -> tuple[Path, str, bool]:
    """(the file, the entry as recorded, whether it names a module)."""
    if where.endswith(".py") or "/" in where:
        path = Path(os.path.normpath(root / where))  # `..` resolved, a symlink in the project kept
        if not path.is_relative_to(root):
            raise ArError(f"--entry {where!r} is outside the project ({root})", "give a file inside the project root")
        if not path.is_file():
            raise ArError(f"--entry {where!r}: no such file in the project ({root})", _FIX)
        return path, _as_path(path.relative_to(root).as_posix()), False
    if not all(part.isidentifier() for part in where.split(".")):
        raise ArError(f"--entry {where!r} is neither a .py file nor a module name", _FIX)
    parts = where.split(".")
    inside = ("__init__.py",) if for_function else ("__main__.py",)
    for base in (root, root / "src"):
        for candidate in (base.joinpath(*parts[:-1], parts[-1] + ".py"), *(base.joinpath(*parts, name) for name in inside)):
            if candidate.is_file():
                return candidate, where, True
    raise ArError(f"--entry {where!r}: no module of that name in the project ({root})", _FIX)


def _as_path(relative: str) -> str:
    """A recorded path always reads as one (a / or .py), never as a module name."""
    return relative if _is_path(relative) else f"./{relative}"


def _is_path(entry: str) -> bool:
    return "/" in entry or entry.endswith(".py")


def _shown(entry: str) -> str:
    return " ".join(entry.split())  # in a comment line


def _fixed_args(pattern: str, text: str | None):
    """The --cli-args-json value, checked for what the pattern can pass on."""
    examples = {"function": '\'{"epochs": 3}\'', "hydra": '\'["optimizer=adam"]\'', "argparse-cli": '\'["--epochs", "3"]\' or \'{"--epochs": 3}\''}
    if text is None:
        return {"function": {}, "hydra": []}.get(pattern, [])
    if pattern == "script":
        raise ArError("--cli-args-json does not apply to the script pattern (a copy of the script, run without arguments)",
                      "put the values in the copied script's knobs, or choose --entry-pattern argparse-cli")

    def refuse(constant):
        raise ValueError(f"{constant} is not a number JSON allows")

    try:
        value = json.loads(text, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise ArError(f"--cli-args-json is not usable JSON ({exc})", f"e.g. --cli-args-json {examples[pattern]}") from None
    if _depth(value) > _MAX_DEPTH or not _fits(pattern, value):
        shape = {"function": "an object of keyword arguments", "hydra": "a list of override strings"}.get(
            pattern, "a list of strings, or an object of options whose values are strings, numbers, booleans, null or lists of them")
        raise ArError(f"--cli-args-json for {pattern} must be {shape}", f"e.g. --cli-args-json {examples[pattern]}")
    return value


def _fits(pattern: str, value) -> bool:
    scalar = (str, int, float, bool, type(None))
    if pattern == "function":
        return isinstance(value, dict)
    if pattern == "hydra":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if isinstance(value, list):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, dict) and all(
        isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(i, scalar) for i in v)) for v in value.values())


def _depth(value, level: int = 0) -> int:
    if level > _MAX_DEPTH:
        return level
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return max((_depth(v, level + 1) for v in items), default=level)


def _literal(value) -> str:
    """A Python literal of a JSON value (finite numbers only), one item per line when long."""
    text = repr(value)
    if len(text) <= 80 or not value:
        return text
    if isinstance(value, dict):
        return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in value.items()) + "}"
    return "[\n" + "".join(f"    {v!r},\n" for v in value) + "]"


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = [f"#   {' '.join(item.split())}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        shown.append(f"#   ... and {len(items) - _MAX_LISTED} more")
    return "\n".join([f"# {' '.join(title.split())}", *shown]) + "\n"


def _name(option: host_source.Option | None) -> str | None:
    return option.name.split("/")[0] if option else None


def _declares_seed(config_dir: Path) -> bool:
    return any(re.search(r"(?m)^seed\s*:", p.read_text(encoding="utf-8", errors="replace")) for p in config_dir.glob("*.yaml"))


def _line_offsets(data: bytes) -> list[int]:
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _offset(starts: list[int], lineno: int, col: int) -> int:
    return starts[lineno - 1] + col  # ast columns are UTF-8 byte offsets


def _head_end(tree: ast.Module, starts: list[int]) -> int:
    """The byte offset after the module docstring and `from __future__` imports."""
    end = 0
    for index, node in enumerate(tree.body):
        docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if not (docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__")):
            break
        end = starts[node.end_lineno]
    return end


def _bindings(tree: ast.Module) -> dict[str, int]:
    """How often each name is bound anywhere in the file (any scope): a knob must be bound once,
    at module level, or moving it (or naming a default after it) could change what the code does."""
    counts: dict[str, int] = {}

    def add(name: str) -> None:
        counts[name] = counts.get(name, 0) + 1

    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            add(node.name)
        elif isinstance(node, ast.arg):
            add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            for name in node.names:
                add(name)
                add(name)  # a function rebinds it
        elif isinstance(node, ast.ExceptHandler) and node.name:
            add(node.name)
        elif isinstance(node, (ast.MatchAs, ast.MatchStar)) and node.name:
            add(node.name)
    return counts


def _constant(node: ast.stmt, bound: dict[str, int]) -> str | None:
    """The name of a module-level `UPPER_NAME = <literal>` bound nowhere else."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
        return None
    name = node.targets[0].id
    if not _CONSTANT.fullmatch(name) or bound.get(name) != 1 or name == "RUN_NOTE":
        return None
    if not host_source.is_literal(node.value) or (isinstance(node.value, ast.Constant) and isinstance(node.value.value, float) and not math.isfinite(node.value.value)):
        return None
    return name


def _whole_lines(node: ast.stmt, data: bytes, starts: list[int]) -> bool:
    """The statement alone on its lines (a trailing comment allowed), so its lines can move."""
    before = data[starts[node.lineno - 1] : _offset(starts, node.lineno, node.col_offset)]
    after = data[_offset(starts, node.end_lineno, node.end_col_offset) : starts[node.end_lineno]]
    return not before.strip() and (not after.strip() or after.strip().startswith(b"#"))
