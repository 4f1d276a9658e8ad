"""What `ar init` learns from the host's source without running it: which entry pattern fits,
the options and defaults it declares, the parameters of a function, the config groups of a
Hydra app. Static (ast) only: importing the host at init could take seconds or train a model.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import NamedTuple

# Option names a host commonly uses for where it writes checkpoints, most specific first.
CHECKPOINT_OPTIONS = (
    "output_dir", "ckpt_dir", "checkpoint_dir", "checkpoints_dir", "save_dir", "out_dir", "out",
    "log_dir", "logdir", "default_root_dir",
)
SEED_OPTIONS = ("seed", "random_seed", "rng_seed")
_CLI_MARKERS = re.compile(r"\b(argparse|ArgumentParser|HfArgumentParser|click|typer|fire|jsonargparse|sys\.argv)\b")


class Option(NamedTuple):
    name: str  # as given on the command line (`--lr`) or as a keyword (`lr`)
    default: str | None  # the default's source text; None when it has none or it is not a literal

    @property
    def key(self) -> str:
        return self.name.lstrip("-").replace("-", "_")


def parse(path: Path) -> ast.Module | None:
    try:
        return ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None


def detect_pattern(source: str) -> str:
    """The entry pattern for a script: hydra for a @hydra.main app, argparse-cli for a script that
    reads its command line, else script (its code is copied and its constants become knobs)."""
    if re.search(r"@\s*hydra\.main\b|\bfrom hydra import\b[^\n]*\bmain\b", source):
        return "hydra"
    return "argparse-cli" if _CLI_MARKERS.search(source) else "script"


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
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and any(_names(d).endswith("dataclass") for d in node.decorator_list):
            for item in node.body:
                if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                    flag = "--" + item.target.id
                    options.setdefault(flag, Option(flag, _field_default(item.value)))
    return list(options.values())


def uses_hf_training_arguments(source: str) -> bool:
    return bool(re.search(r"\b(TrainingArguments|Seq2SeqTrainingArguments|HfArgumentParser)\b", source))


def function_params(tree: ast.Module, name: str) -> list[Option] | None:
    """The keyword parameters of the module-level function `name`; None if there is none."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
            params = [Option(a.arg, literal_text(d)) for a, d in zip(positional, defaults) if a.arg not in ("self", "cls")]
            params += [Option(a.arg, literal_text(d)) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
            return params
    return None


def pick(options: list[Option], wanted: tuple[str, ...]) -> Option | None:
    """The first of `wanted` (by key) that the host declares."""
    by_key = {o.key: o for o in options}
    return next((by_key[w] for w in wanted if w in by_key), None)


def hydra_config_dir(tree: ast.Module) -> str | None:
    """The config_path of the @hydra.main decorator, when it is a literal."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and _names(deco.func).endswith("main"):
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


def _names(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_names(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return _names(node.func)
    return ""


def literal_text(node: ast.expr | None) -> str | None:
    if node is None:
        return None
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return ast.unparse(node)


def _field_default(node: ast.expr | None) -> str | None:
    """The default of a dataclass field: `x: int = 3` or `x: int = field(default=3, ...)`."""
    if isinstance(node, ast.Call) and _names(node.func).endswith("field"):
        return literal_text(next((kw.value for kw in node.keywords if kw.arg == "default"), None))
    return literal_text(node)
