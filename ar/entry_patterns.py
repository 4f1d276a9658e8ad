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
import re
from pathlib import Path
from typing import NamedTuple

from ar import host_source
from ar.errors import ArError
from ar.render import render

PATTERNS = ("argparse-cli", "hydra", "function", "script")
# Where each pattern's checkpoints are found when --checkpoint-glob is not given (None: $AR_CKPT_DIR).
HYDRA_CHECKPOINT_GLOB = "{run_dir}/hydra/**/checkpoints"
_MAX_LISTED = 40  # options listed in train.py's header comment
_CONSTANT = re.compile(r"[A-Z][A-Z0-9_]*")


class HostEntry(NamedTuple):
    pattern: str
    entry: str  # as recorded: a path relative to the project root, a module, or either with :function
    file: Path  # the host file it names


class Scaffold(NamedTuple):
    train_py: str
    checkpoint_glob: str | None


def resolve(root: Path, entry: str, pattern: str | None) -> HostEntry:
    """The host entry `ar init --entry` names, checked against the project; the pattern detected
    from the source when not given."""
    if pattern is not None and pattern not in PATTERNS:
        raise ArError(f"--entry-pattern {pattern!r} is not known", f"use one of: {', '.join(PATTERNS)}")
    where, colon, function = entry.strip().rpartition(":") if ":" in entry else (entry.strip(), "", "")
    if colon and not function.isidentifier():
        raise ArError(f"--entry {entry!r}: {function!r} is not a function name", "give module:function, e.g. --entry mypkg.train:main")
    if pattern == "function" and not colon:
        raise ArError(f"--entry-pattern function needs --entry module:function, not {entry!r}", "e.g. --entry mypkg.train:main")
    if colon and pattern not in (None, "function"):
        raise ArError(f"--entry {entry!r} names a function, which --entry-pattern {pattern} does not call", "use --entry-pattern function, or name the script")
    file, recorded = _host_file(root, where, for_function=bool(colon))
    source = file.read_text(encoding="utf-8", errors="replace")
    chosen = pattern or ("function" if colon else host_source.detect_pattern(source))
    if chosen in ("hydra", "script"):
        recorded = file.relative_to(root).as_posix()  # both run the file itself
    if chosen == "function":
        tree = host_source.parse(file)
        if tree is None or host_source.function_params(tree, function) is None:
            raise ArError(f"--entry {entry!r}: {recorded} defines no function {function}", "name a module-level function of the host")
        recorded = f"{recorded}:{function}"
    return HostEntry(chosen, recorded, file)


def scaffold(host: HostEntry, cli_args_json: str | None, metric: str) -> Scaffold:
    fixed = _fixed_args(host.pattern, cli_args_json)
    tree = host_source.parse(host.file)
    if tree is None:
        raise ArError(f"{host.entry} does not parse as Python", "fix the host script, or give another --entry")
    if host.pattern == "script":
        return Scaffold(hoist(host.file.read_text(encoding="utf-8"), host.entry), None)
    if host.pattern == "argparse-cli":
        source = host.file.read_text(encoding="utf-8", errors="replace")
        options = host_source.cli_options(tree)
        hf_trainer = host_source.uses_hf_training_arguments(source)
        if hf_trainer:
            ckpt, seed = "--output_dir", "--seed"  # TrainingArguments fields
        else:
            ckpt, seed = (_name(host_source.pick(options, names)) for names in (host_source.CHECKPOINT_OPTIONS, host_source.SEED_OPTIONS))
        shown = [f"{o.name} {o.default or ''}".rstrip() for o in options]
        if hf_trainer:
            shown.append("and every TrainingArguments field: --learning_rate, --warmup_ratio, --weight_decay, --per_device_train_batch_size, ...")
        listing = _listing("The host's options (from its source), for CLI_OVERRIDES:", shown)
        text = render("entry_argparse_cli.py", {
            "SHOWN": host.entry if host.entry.endswith(".py") else f"-m {host.entry}",
            "ENTRY": repr(host.entry), "ENTRY_KIND": "the host script" if host.entry.endswith(".py") else "the host module, run as `python -m`",
            "FIXED_ARGS": _literal(fixed), "CKPT_OPTION": repr(ckpt), "SEED_OPTION": repr(seed), "OPTIONS_COMMENT": listing,
        })
        return Scaffold(text, None)
    if host.pattern == "hydra":
        config_dir = host_source.hydra_config_dir(tree)
        groups = host_source.config_groups(host.file.parent / config_dir) if config_dir else {}
        listing = _listing(f"Config groups ({config_dir}/), for HYDRA_OVERRIDES:", [f"{g}: {', '.join(o)}" for g, o in groups.items()])
        seed = "seed" if config_dir and _declares_seed(host.file.parent / config_dir) else None
        text = render("entry_hydra.py", {
            "ENTRY_SHOWN": host.entry, "ENTRY": repr(host.entry), "FIXED_ARGS": _literal(fixed),
            "SEED_OPTION": repr(seed), "OPTIONS_COMMENT": listing,
        })
        return Scaffold(text, HYDRA_CHECKPOINT_GLOB)
    params = host_source.function_params(tree, host.entry.rpartition(":")[2]) or []
    ckpt, seed = (_name(host_source.pick(params, names)) for names in (host_source.CHECKPOINT_OPTIONS, host_source.SEED_OPTIONS))
    listing = _listing("Its parameters (from its source), for KWARGS:", [f"{p.name}={p.default}" if p.default else p.name for p in params])
    text = render("entry_function.py", {
        "FIXED_ARGS": _literal(fixed), "ENTRY": repr(host.entry), "METRIC": repr(metric), "METRIC_SHOWN": metric,
        "CKPT_OPTION": repr(ckpt), "SEED_OPTION": repr(seed), "OPTIONS_COMMENT": listing,
    })
    return Scaffold(text, None)


def hoist(source: str, entry: str) -> str:
    """The host script as train.py: its module-level constants and literal option defaults
    become knobs at the top (RUN_NOTE first), the rest of its code follows unchanged, run as if
    it were the host file (`__file__`, imports)."""
    tree = ast.parse(source)
    data = source.encode("utf-8")
    starts = _line_offsets(data)
    head_end = _head_end(tree, starts)  # a docstring and `from __future__` stay first
    assigned = _module_names(tree)
    knobs: list[tuple[str, str, str]] = []  # (name, value, where it came from)
    edits: list[tuple[int, int, bytes]] = []
    for node in tree.body:
        name = _constant(node, assigned)
        if name and node.lineno > _line_of(head_end, starts) and _whole_lines(node, data, starts):
            knobs.append((name, ast.get_source_segment(source, node.value), f"line {node.lineno}"))
            edits.append((starts[node.lineno - 1], starts[node.end_lineno], b""))
    taken = set(assigned) | {k[0] for k in knobs} | {"RUN_NOTE"}
    for flag, default in host_source.option_calls(tree):
        option = host_source.Option(flag, host_source.literal_text(default))
        if option.default is None:
            continue
        name = re.sub(r"\W", "_", option.key).upper()
        if not _CONSTANT.fullmatch(name) or name in taken:
            continue
        taken.add(name)
        knobs.append((name, ast.get_source_segment(source, default), f"{option.name} default"))
        edits.append((_offset(starts, default.lineno, default.col_offset), _offset(starts, default.end_lineno, default.end_col_offset), name.encode()))
    body = bytearray(data)
    for begin, end, text in sorted(edits, reverse=True):
        body[begin:end] = text
    head, rest = bytes(body[:head_end]).decode(), bytes(body[head_end:]).decode()
    lines = [head.rstrip("\n") + "\n\n" if head.strip() else ""]
    lines.append('RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)\n')
    if knobs:
        lines.append(f"# Knobs hoisted from {entry}, where they stood:\n")
        lines += [f"{name} = {value}  # {where}\n" for name, value, where in knobs]
    lines.append(render("entry_script_preamble.py", {"ENTRY": repr(entry), "ENTRY_SHOWN": entry}))
    lines += _given_by_ar([name for name, _, _ in knobs])
    return "".join(lines) + rest


def _given_by_ar(knobs: list[str]) -> list[str]:
    """Lines that point the hoisted checkpoint directory at $AR_CKPT_DIR and the seed at $AR_SEED."""
    lines = []
    ckpt = next((k for k in (c.upper() for c in host_source.CHECKPOINT_OPTIONS) if k in knobs), None)
    seed = next((k for k in (c.upper() for c in host_source.SEED_OPTIONS) if k in knobs), None)
    if ckpt:
        lines.append(f'{ckpt} = _ar_os.environ.get("AR_CKPT_DIR") or {ckpt}  # ar keeps the run\'s checkpoint there\n')
    if seed:
        lines.append(f'{seed} = type({seed})(_ar_os.environ["AR_SEED"]) if _ar_os.environ.get("AR_SEED") else {seed}\n')
    return lines + ["\n"] if lines else lines


def _host_file(root: Path, where: str, for_function: bool) -> tuple[Path, str]:
    fix = "give the host's script relative to the project root (e.g. --entry scripts/train.py), a module (mypkg.train) or module:function"
    if not where:
        raise ArError("--entry is empty", fix)
    if where.endswith(".py") or "/" in where:
        path = (root / where).resolve()
        if not path.is_relative_to(root) or not path.is_file():
            raise ArError(f"--entry {where!r}: no such file in the project ({root})", fix)
        return path, path.relative_to(root).as_posix()
    if not all(part.isidentifier() for part in where.split(".")):
        raise ArError(f"--entry {where!r} is neither a .py file nor a module name", fix)
    parts = where.split(".")
    inside = ("__init__.py",) if for_function else ("__main__.py",)
    for base in (root, root / "src"):
        for candidate in (base.joinpath(*parts[:-1], parts[-1] + ".py"), *(base.joinpath(*parts, name) for name in inside)):
            if candidate.is_file():
                return candidate, where
    raise ArError(f"--entry {where!r}: no module of that name in the project ({root})", fix)


def _fixed_args(pattern: str, text: str | None):
    wanted = {"function": dict, "hydra": list}.get(pattern)
    if text is None:
        return wanted() if wanted else []
    if pattern == "script":
        raise ArError("--cli-args-json does not apply to --entry-pattern script", "put the values in the copied script's knobs, or use --entry-pattern argparse-cli")
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ArError(f"--cli-args-json is not JSON ({exc})", 'e.g. --cli-args-json \'["--epochs", "3"]\' or \'{"--epochs": 3}\'') from None
    shapes = {"function": "an object of keyword arguments", "hydra": "a list of override strings"}
    ok = (isinstance(value, dict) if pattern == "function"
          else isinstance(value, list) and all(isinstance(v, str) for v in value) if pattern == "hydra"
          else isinstance(value, (list, dict)))
    if not ok:
        raise ArError(f"--cli-args-json for {pattern} must be {shapes.get(pattern, 'a list of arguments or an object of options')}",
                      'e.g. \'{"epochs": 3}\'' if pattern == "function" else '\'["optimizer=adam"]\'' if pattern == "hydra" else '\'["--epochs", "3"]\'')
    return value


def _literal(value) -> str:
    """A Python literal of a JSON value, one item per line when long."""
    text = repr(value)
    if len(text) <= 80 or not value:
        return text
    if isinstance(value, dict):
        return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in value.items()) + "}"
    return "[\n" + "".join(f"    {v!r},\n" for v in value) + "]"


def _listing(title: str, items: list[str]) -> str:
    if not items:
        return ""
    shown = [f"#   {item}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        shown.append(f"#   ... and {len(items) - _MAX_LISTED} more")
    return "\n".join([f"# {title}", *shown]) + "\n"


def _name(option: host_source.Option | None) -> str | None:
    return option.name if option else None


def _declares_seed(config_dir: Path) -> bool:
    return any(re.search(r"(?m)^seed\s*:", p.read_text(encoding="utf-8", errors="replace")) for p in config_dir.glob("*.yaml"))


def _line_offsets(data: bytes) -> list[int]:
    starts = [0]
    for line in data.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _offset(starts: list[int], lineno: int, col: int) -> int:
    return starts[lineno - 1] + col  # ast columns are UTF-8 byte offsets


def _line_of(offset: int, starts: list[int]) -> int:
    return next((i for i, s in enumerate(starts) if s >= offset), len(starts))


def _head_end(tree: ast.Module, starts: list[int]) -> int:
    """The byte offset after the module docstring and `from __future__` imports."""
    end = 0
    for index, node in enumerate(tree.body):
        docstring = index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
        if not (docstring or (isinstance(node, ast.ImportFrom) and node.module == "__future__")):
            break
        end = starts[node.end_lineno]
    return end


def _module_names(tree: ast.Module) -> dict[str, int]:
    """How often each name is bound at module level."""
    counts: dict[str, int] = {}
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
        names = [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [(a.asname or a.name).split(".")[0] for a in node.names]
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _constant(node: ast.stmt, assigned: dict[str, int]) -> str | None:
    """The name of a module-level `UPPER_NAME = <literal>` bound only there."""
    if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
        return None
    name = node.targets[0].id
    if not _CONSTANT.fullmatch(name) or assigned.get(name) != 1 or name == "RUN_NOTE":
        return None
    try:
        ast.literal_eval(node.value)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return name


def _whole_lines(node: ast.stmt, data: bytes, starts: list[int]) -> bool:
    """The statement alone on its lines (a trailing comment allowed), so its lines can move."""
    before = data[starts[node.lineno - 1] : _offset(starts, node.lineno, node.col_offset)]
    after = data[_offset(starts, node.end_lineno, node.end_col_offset) : starts[node.end_lineno]]
    return not before.strip() and (not after.strip() or after.strip().startswith(b"#"))
