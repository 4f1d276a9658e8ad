RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)
# Keyword arguments for the host's function, over its own defaults: {"lr": 3e-4, "epochs": 5}.
KWARGS = __FIXED_ARGS__

# The loop edits this file only (see program.md for the scope). The host's own code is never
# edited: this file calls ENTRY(**KWARGS) and prints what it returns as metrics (a number is
# __METRIC_SHOWN__; a dict or an object's numeric attributes print as name=value lines).
ENTRY = __ENTRY__
PRIMARY_METRIC = __METRIC__
CKPT_KWARG = __CKPT_OPTION__  # the parameter that gets $AR_CKPT_DIR, where ar keeps the run's checkpoint
SEED_KWARG = __SEED_OPTION__  # __SEED_HINT__
__OPTIONS_COMMENT__
import importlib  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def patch_host():
    """Structural changes go here: patch the host's modules before the call, e.g.
        import mypkg.model
        mypkg.model.Block.forward = my_forward"""


def host_function(root):
    where, _, name = ENTRY.rpartition(":")
    if where.endswith(".py"):
        sys.path[:1] = [str((root / where).parent), str(root), str(root / "src")]
        return runpy.run_path(str(root / where), run_name="__host__")[name]
    sys.path[:1] = [str(root), str(root / "src")]
    return getattr(importlib.import_module(where), name)


def number(value):
    """A float of an int, float, numpy scalar or 0-d tensor; None for anything else."""
    if isinstance(value, (bool, str, bytes)):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def report(result):
    if number(result) is not None:
        result = {PRIMARY_METRIC: result}
    items = result.items() if isinstance(result, dict) else vars(result).items() if hasattr(result, "__dict__") else ()
    for name, value in items:
        if number(value) is not None:
            print(f"{name}={number(value)!r}", flush=True)  # repr: every digit of a float (and nan, inf)


def main():
    root = next((p.parent for p in Path(__file__).resolve().parents if p.name == ".autoresearch"), Path.cwd())
    function = host_function(root)
    kwargs = dict(KWARGS)
    if CKPT_KWARG and os.environ.get("AR_CKPT_DIR"):
        kwargs.setdefault(CKPT_KWARG, os.environ["AR_CKPT_DIR"])
    if SEED_KWARG and os.environ.get("AR_SEED"):
        kwargs.setdefault(SEED_KWARG, int(os.environ["AR_SEED"]))
    patch_host()
    report(function(**kwargs))


if __name__ == "__main__":
    main()
