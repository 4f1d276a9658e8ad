"""`ar demo`: the main job on an embedded example. Builds a throwaway project and drives it
through the real `ar run`, with the edits an agent might make: a baseline, an improvement
(advance), a worse change (revert), a syntax error (crash, train.py restored) and a hang
(the watchdog kills it at the time limit)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from ar.errors import ArError

SLUG = "demo-lr-search"
HANG_SECONDS = 3

# (title, expected verdict, `ar run` arguments, text edits (old, new) of train.py): a knob change
# goes through `--set`/`--note` as an agent makes it, a code change is an edit of the file.
STEPS = [
    ("the baseline", "advance", (), ()),
    ("a larger learning rate", "advance", ("--set", "LEARNING_RATE=0.05", "--note", "lr 0.005 -> 0.05"), ()),
    ("a much smaller learning rate", "revert", ("--set", "LEARNING_RATE=0.0002", "--note", "lr 0.05 -> 0.0002"), ()),
    ("a syntax error", "crash", (), (("def main():", "def main(:"), ("RUN_NOTE = 'lr", "RUN_NOTE = 'typo; lr"))),
    (
        "an endless loop",
        "timeout",
        ("--seconds", str(HANG_SECONDS)),
        (("def main():", "def main():\n    while True:\n        pass"), ("RUN_NOTE = 'lr", "RUN_NOTE = 'hang; lr")),
    ),
]


def demo_command(directory: Path | None) -> int:
    root = _project_dir(directory)
    print(f"demo project: {root}")
    _ar(root, "init", "--example", "--expr", SLUG, "--goal", "lower the validation loss of a small regression model",
        "--primary-metric", "val_loss", "--primary-direction", "min", "--seconds", "30")
    _ar(root, "session", "--max-runs", "20", "--plateau", "5", "--ack-baseline")
    train_py = root / ".autoresearch" / SLUG / "train.py"
    for number, (title, expected, args, edits) in enumerate(STEPS, 1):
        print(f"\n== step {number}/{len(STEPS)}: {title} (expect {expected})")
        if edits:
            text = train_py.read_text(encoding="utf-8")
            for old, new in edits:
                text = text.replace(old, new, 1)
            train_py.write_text(text, encoding="utf-8")
            print("  (train.py edited)")
        print(f"  $ ar run {' '.join(_quoted(a) for a in args)}".rstrip())
        _ar(root, "run", *args, check=False)
    print("\n== ar status --compact")
    _ar(root, "status", "--compact")
    print("\n== ar report")
    _ar(root, "report")
    if directory is None:
        print(f"\n(the demo project stays in {root} for a look around)")
    return 0


def _quoted(arg: str) -> str:
    return f'"{arg}"' if " " in arg else arg


def _project_dir(directory: Path | None) -> Path:
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="ar-demo-"))
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ArError(f"--dir {directory} is not empty", "give a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _ar(root: Path, *args: str, check: bool = True) -> None:
    env = {k: v for k, v in os.environ.items() if k != "AR_PROJECT_ROOT"}
    done = subprocess.run([sys.executable, "-m", "ar", *args], cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = done.stdout.rstrip()
    if output:
        print("\n".join("  " + line for line in output.splitlines()), flush=True)
    if check and done.returncode != 0:
        raise ArError(f"demo step `ar {' '.join(args[:2])}` failed with exit code {done.returncode}", "see its output above")
