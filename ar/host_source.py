"""What `ar init` learns from the host's source without running it: which entry pattern fits,
the options and defaults it declares, the parameters of a function, the config groups of a
Hydra app. Static (ast) only: importing the host at init could take seconds or train a model.
"""

from __future__ import annotations

import ast
import io
import tokenize
from pathlib import Path
from typing import NamedTuple

# Option names a host commonly uses for where it writes checkpoints, most specific first.
CHECKPOINT_OPTIONS = (
    "output_dir", "ckpt_dir", "checkpoint_dir", "checkpoints_dir", "save_dir", "out_dir", "out",
    "log_dir", "logdir", "default_root_dir",
)
SEED_OPTIONS = ("seed", "random_seed", "rng_seed")
_CLI_MODULES = {"argparse", "click", "typer", "fire", "jsonargparse"}
_PARSE_ERRORS = (SyntaxError, ValueError, MemoryError, RecursionError, UnicodeDecodeError, LookupError)


class Option(NamedTuple):
    """A command-line option (`--lr`) or a keyword parameter (`lr`) of the host, with its default."""

    name: str
    default: str | None  # the default's source text; None when it has none or it is not a literal

    @property
    def key(self) -> str:
        return self.name.split("/")[0].lstrip("-").replace("-", "_")  # click's `--fp16/--no-fp16`: fp16


class HostSource(NamedTuple):
    text: str  # decoded as Python decodes it (a BOM or a coding line honoured)
    tree: ast.Module


def read(path: Path) -> HostSource | None:
    """The host file's source and syntax tree; None when it is not valid Python."""
    try:
        data = path.read_bytes()
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        if text.startswith("\ufeff"):
            text = text[1:]
        return HostSource(text, ast.parse(text))
    except (OSError, *_PARSE_ERRORS):
        return None


def detect_pattern(tree: ast.Module) -> str:
    """hydra for a @hydra.main app, argparse-cli for a program that reads its command line
    (argparse, click, typer, fire, HfArgumentParser, sys.argv), else script. From the code, never
    from comments or docstrings."""
    imported = _imported_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and any(_is_hydra_main(d, imported) for d in node.decorator_list):
            return "hydra"
    if any(name.split(".")[0] in _CLI_MODULES or name.endswith("HfArgumentParser") for name in imported.values()) or _hf_parser_calls(tree):
        return "argparse-cli"
    reads_argv = any(isinstance(n, ast.Attribute) and n.attr == "argv" and _dotted(n.value) == "sys" for n in ast.walk(tree))
    return "argparse-cli" if reads_argv else "script"


def option_calls(tree: ast.Module):
    """(flag, default node or None) of each argparse `add_argument` and click `option` call."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("add_argument", "option"):
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str) and a.value.startswith("-")]
            if flags:
                yield next((f for f in flags if f.startswith("--")), flags[0]), next((kw.value for kw in node.keywords if kw.arg == "default"), None)


def cli_options(tree: ast.Module) -> list[Option]:
    """Options declared with argparse `add_argument`, click `option`, and the fields of the
    dataclasses an HfArgumentParser reads (each field is a `--name` option)."""
    options: dict[str, Option] = {}
    for flag, default in option_calls(tree):
        options.setdefault(flag, Option(flag, literal_text(default)))
    parsed = {name for call in _hf_parser_calls(tree) for name in _dataclass_names(call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in parsed:
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    flag = "--" + item.target.id
                    options.setdefault(flag, Option(flag, _field_default(item.value)))
    return list(options.values())


def uses_hf_training_arguments(tree: ast.Module) -> bool:
    """An HfArgumentParser that parses TrainingArguments (or Seq2SeqTrainingArguments)."""
    return any(name.endswith("TrainingArguments") for call in _hf_parser_calls(tree) for name in _dataclass_names(call))


def function_def(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name), None)


def function_params(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[Option]:
    """The keyword parameters of a function, with their literal defaults."""
    args = node.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    params = [Option(a.arg, literal_text(d)) for a, d in zip(positional, defaults) if a.arg not in ("self", "cls")]
    return params + [Option(a.arg, literal_text(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)]


def pick(options: list[Option], wanted: tuple[str, ...]) -> Option | None:
    """The first of `wanted` (by key) that the host declares."""
    by_key = {o.key: o for o in options}
    return next((by_key[w] for w in wanted if w in by_key), None)


def hydra_config_dir(tree: ast.Module) -> str | None:
    """The config_path of the @hydra.main decorator, when it is a literal."""
    imported = _imported_names(tree)
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and _is_hydra_main(deco, imported):
                    for kw in deco.keywords:
                        if kw.arg == "config_path" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                            return kw.value.value
    return None


def config_groups(config_dir: Path) -> dict[str, list[str]]:
    """Hydra config groups: sub-directories of the config dir holding .yaml options."""
    groups: dict[str, list[str]] = {}
    try:
        for sub in sorted(p for p in config_dir.iterdir() if p.is_dir()):
            options = sorted(p.stem for p in sub.glob("*.yaml"))
            if options:
                groups[sub.name] = options
    except OSError:
        pass
    return groups


def literal_text(node: ast.expr | None) -> str | None:
    if node is None or not is_literal(node):
        return None
    return ast.unparse(node)


def is_literal(node: ast.expr) -> bool:
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    return True


def _imported_names(tree: ast.Module) -> dict[str, str]:
    """Local name -> the dotted name it was imported as (`from hydra import main as m`: m -> hydra.main)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for alias in node.names:
                names[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return names


def _is_hydra_main(decorator: ast.expr, imported: dict[str, str]) -> bool:
    dotted = _dotted(decorator.func if isinstance(decorator, ast.Call) else decorator)
    head, _, rest = dotted.partition(".")
    resolved = imported.get(head, head) + (f".{rest}" if rest else "")
    return resolved == "hydra.main"


def _hf_parser_calls(tree: ast.Module) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func).endswith("HfArgumentParser")]


def _dataclass_names(call: ast.Call) -> list[str]:
    """The classes an HfArgumentParser(...) call is given: one, or a tuple or list of them."""
    if not call.args:
        return []
    given = call.args[0]
    items = given.elts if isinstance(given, (ast.Tuple, ast.List)) else [given]
    return [_dotted(item).rpartition(".")[2] for item in items if _dotted(item)]


def _dotted(node: ast.expr) -> str:
    """`a.b.c` for a name or attribute chain; "" for anything else."""
    if isinstance(node, ast.Attribute):
        head = _dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return node.id if isinstance(node, ast.Name) else ""


def _field_default(node: ast.expr | None) -> str | None:
    """The default of a dataclass field: `x: int = 3` or `x: int = field(default=3, ...)`."""
    if isinstance(node, ast.Call) and _dotted(node.func).endswith("field"):
        return literal_text(next((kw.value for kw in node.keywords if kw.arg == "default"), None))
    return literal_text(node)
