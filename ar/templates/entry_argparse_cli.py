RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)
# Options for the host, merged over FIXED_ARGS (an override wins): {"--lr": 3e-4, "--fp16": True}.
# True passes a bare flag; False or None leaves the option out.
CLI_OVERRIDES = {}

# The loop edits this file only (see program.md for the scope). The host's own code is never
# edited: this file runs it as `python __SHOWN__ <args>` would, with the arguments below.
ENTRY = __ENTRY__  # __ENTRY_KIND__
FIXED_ARGS = __FIXED_ARGS__  # the arguments of the run as set up
CKPT_OPTION = __CKPT_OPTION__  # the host option that gets $AR_CKPT_DIR, where ar keeps the run's checkpoint
SEED_OPTION = __SEED_OPTION__  # __SEED_HINT__
__OPTIONS_COMMENT__
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def patch_host():
    """Structural changes go here: patch the host's modules before it runs, e.g.
        import mypkg.model
        mypkg.model.Block.forward = my_forward
    The host imports the same module objects, so it runs with the patch."""


def host_argv():
    given = {}  # from ar, for this run; CLI_OVERRIDES still wins
    if CKPT_OPTION and os.environ.get("AR_CKPT_DIR"):
        given[CKPT_OPTION] = os.environ["AR_CKPT_DIR"]
    if SEED_OPTION and os.environ.get("AR_SEED"):
        given[SEED_OPTION] = os.environ["AR_SEED"]
    if isinstance(FIXED_ARGS, dict):
        return _options({**FIXED_ARGS, **given, **CLI_OVERRIDES})
    return [*FIXED_ARGS, *_options({**given, **CLI_OVERRIDES})]  # argparse and click keep the last


def _options(options):
    args = []
    for name, value in options.items():
        flag = name if name.startswith("-") else "--" + name
        if value is True:
            args.append(flag)
        elif value is not False and value is not None:
            args += [flag, *map(str, value)] if isinstance(value, (list, tuple)) else [flag, str(value)]
    return args


def main():
    root = next((p.parent for p in Path(__file__).resolve().parents if p.name == ".autoresearch"), Path.cwd())
    target = ENTRY if "/" in ENTRY or ENTRY.endswith(".py") else None  # else a module
    # The host's imports resolve as when it runs itself: its own folder, the project root (and src/).
    sys.path[:1] = [str((root / target).parent) if target else str(root), str(root), str(root / "src")]
    patch_host()
    if target:
        sys.argv = [str(root / target), *host_argv()]
        runpy.run_path(str(root / target), run_name="__main__")
    else:
        sys.argv = [ENTRY, *host_argv()]
        runpy.run_module(ENTRY, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
