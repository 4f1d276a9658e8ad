RUN_NOTE = "baseline"  # what this version tries; the knobs follow (`run --set NAME=VALUE` changes them)
# Hydra overrides, as on the command line, after FIXED_OVERRIDES: ["optimizer=adam", "optimizer.lr=3e-4"].
HYDRA_OVERRIDES = []

# The loop edits this file only (see program.md for the scope). The host's own code is never
# edited: this file runs the @hydra.main app as `python __ENTRY_SHOWN__ <overrides>` would, with
# the job's output directory (events, checkpoints, .hydra/) in this run's directory.
ENTRY = __ENTRY__
FIXED_OVERRIDES = __FIXED_ARGS__  # the overrides of the run as set up
SEED_KEY = __SEED_OPTION__  # __SEED_HINT__
__OPTIONS_COMMENT__
import os  # noqa: E402
import runpy  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def patch_host():
    """Structural changes go here: patch the host's modules before it runs, e.g.
        import mypkg.model
        mypkg.model.Block.forward = my_forward
    The app imports the same module objects, so it runs with the patch."""


def _quoted(value):
    """A Hydra override value that holds any path: quoted, with quotes and backslashes escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def overrides():
    given = []
    if os.environ.get("AR_RUN_DIR"):
        given.append("hydra.run.dir=" + _quoted(os.path.join(os.environ["AR_RUN_DIR"], "hydra")))
    if SEED_KEY and os.environ.get("AR_SEED"):
        given.append(f"{SEED_KEY}={os.environ['AR_SEED']}")
    return [*given, *FIXED_OVERRIDES, *HYDRA_OVERRIDES]  # a later override of a key wins


def main():
    root = next((p.parent for p in Path(__file__).resolve().parents if p.name == ".autoresearch"), Path.cwd())
    app = root / ENTRY
    sys.path[:1] = [str(app.parent), str(root)]  # the app's imports resolve as when it runs itself
    patch_host()
    sys.argv = [str(app), *overrides()]
    runpy.run_path(str(app), run_name="__main__")


if __name__ == "__main__":
    main()
