"""`ar init --entry`: each entry pattern's train.py drives a host program that was not written
for autoresearch, without editing it, through real `ar run`s (SPEC §8)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Project, clean_env
from test_bad_inputs import assert_one_line_error, tree


def host(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def init(root: Path, *args: str, metric: str = "val_loss") -> Project:
    project = Project(root)
    project.ar("init", "--expr", "exp", "--goal", "g", "--primary-metric", metric, "--primary-direction", "min", "--seconds", "30", *args, check=True)
    return project


# A host package the entry imports: a module of the project, found only when the project root is importable.
MODEL = {
    "mypkg/__init__.py": "",
    "mypkg/model.py": """\
        ACTIVATION = "relu"

        def loss(lr):
            return round(abs(lr - 0.1) + (0.5 if ACTIVATION == "relu" else 0.0), 6)
        """,
}

ARGPARSE_HOST = {
    **MODEL,
    "scripts/train_host.py": """\
        import argparse
        import os

        from mypkg import model

        def main():
            parser = argparse.ArgumentParser()
            parser.add_argument("--lr", type=float, default=0.01)
            parser.add_argument("--epochs", type=int, required=True)
            parser.add_argument("--output_dir", default="out")
            parser.add_argument("--verbose", action="store_true")
            args = parser.parse_args()
            os.makedirs(args.output_dir, exist_ok=True)
            with open(os.path.join(args.output_dir, "model.txt"), "w") as f:
                f.write(f"lr={args.lr}")
            print(f"epochs={args.epochs} verbose={int(args.verbose)}")
            print(f"val_loss={model.loss(args.lr)}")

        if __name__ == "__main__":
            main()
        """,
}


def test_argparse_cli_merges_overrides_into_argv_and_saves_into_the_run(tmp_path: Path) -> None:
    project = init(host(tmp_path, ARGPARSE_HOST), "--entry", "scripts/train_host.py", "--cli-args-json", '{"--epochs": 2}')
    source = project.train_py.read_text()
    assert source.startswith('RUN_NOTE = "baseline"')
    assert "CLI_OVERRIDES = {}" in source and "#   --lr 0.01" in source
    assert json.loads(project.ar("status", "--json", check=True).stdout)["entry"]["pattern"] == "argparse-cli"

    project.ar("run", check=True)
    assert project.result("r0001")["primary"]["value"] == pytest.approx(0.59)
    done = project.ar("run", "--set", 'CLI_OVERRIDES={"--lr": 0.09, "--epochs": 3, "--verbose": True}', "--note", "lr up", check=True)
    assert "advance" in done.stdout
    log = (project.expr / "runs" / "r0002" / "run.log").read_text()
    assert "epochs=3 verbose=1" in log  # an override wins over the fixed value; True is a bare flag
    assert project.result("r0002")["primary"]["value"] == pytest.approx(0.51)
    # --output_dir got $AR_CKPT_DIR: the host's checkpoint is the run's, promoted to best_ckpt
    assert (project.expr / "best_ckpt" / "ckpt" / "model.txt").read_text() == "lr=0.09"
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "scripts" / "train_host.py").read_text() == textwrap.dedent(ARGPARSE_HOST["scripts/train_host.py"])


def test_a_monkey_patch_in_train_py_reaches_the_host(tmp_path: Path) -> None:
    project = init(host(tmp_path, ARGPARSE_HOST), "--entry", "scripts/train_host.py", "--cli-args-json", '["--epochs", "1", "--lr", "0.1"]')
    project.ar("run", check=True)
    assert project.result("r0001")["primary"]["value"] == pytest.approx(0.5)
    source = project.train_py.read_text().replace(
        '    The host imports the same module objects, so it runs with the patch."""\n',
        '    The host imports the same module objects, so it runs with the patch."""\n    import mypkg.model\n    mypkg.model.ACTIVATION = "gelu"\n',
    )
    project.train_py.write_text(source.replace('RUN_NOTE = "baseline"', 'RUN_NOTE = "gelu"'))
    assert "advance" in project.ar("run", check=True).stdout
    assert project.result("r0002")["primary"]["value"] == pytest.approx(0.0)


def test_argparse_cli_runs_a_module_as_python_m(tmp_path: Path) -> None:
    files = {**MODEL, "mypkg/cli.py": "import sys\nfrom . import model\nprint(f'val_loss={model.loss(float(sys.argv[2]))}')\n"}
    project = init(host(tmp_path, files), "--entry", "mypkg.cli", "--entry-pattern", "argparse-cli", "--cli-args-json", '["--lr", "0.3"]')
    project.ar("run", check=True)
    assert project.result("r0001")["primary"]["value"] == pytest.approx(0.7)  # the relative import works


def test_function_pattern_passes_kwargs_and_prints_what_it_returns(tmp_path: Path) -> None:
    files = {
        **MODEL,
        "mypkg/fit.py": """\
            import os
            from mypkg import model

            def train(lr=0.01, epochs=3, *, ckpt_dir="ckpts", seed=0):
                os.makedirs(ckpt_dir, exist_ok=True)
                open(os.path.join(ckpt_dir, "w.txt"), "w").write(str(lr))
                return {"val_loss": model.loss(lr), "epochs": epochs, "tag": "not a number"}
            """,
    }
    project = init(host(tmp_path, files), "--entry", "mypkg.fit:train", "--cli-args-json", '{"epochs": 2}')
    source = project.train_py.read_text()
    assert "KWARGS = {'epochs': 2}" in source and "CKPT_KWARG = 'ckpt_dir'" in source and "#   lr=0.01" in source
    assert "SEED_KWARG = 'seed'  # gets $AR_SEED, a new seed each run, under --baseline-repeats" in source
    project.ar("run", "--set", "KWARGS={'lr': 0.2}", check=True)
    result = project.result("r0001")
    assert result["primary"]["value"] == pytest.approx(0.6)
    assert (project.expr / "best_ckpt" / "ckpt" / "w.txt").read_text() == "0.2"


def test_script_pattern_hoists_constants_and_option_defaults(tmp_path: Path) -> None:
    files = {
        **MODEL,
        "train_plain.py": '''\
            """A user's plain training script."""
            from __future__ import annotations

            import argparse
            from pathlib import Path

            from mypkg import model

            LEARNING_RATE = 0.01  # the step size
            DATA = Path(__file__).parent / "data.txt"

            def main():
                parser = argparse.ArgumentParser()
                parser.add_argument("--warmup-steps", type=int, default=10)
                parser.add_argument("--save_dir", default="saved")
                args = parser.parse_args()
                Path(args.save_dir).mkdir(exist_ok=True)
                (Path(args.save_dir) / "weights.txt").write_text(str(LEARNING_RATE))
                print(f"data={DATA.read_text().strip()} warmup={args.warmup_steps}")
                print(f"val_loss={model.loss(LEARNING_RATE)}")

            if __name__ == "__main__":
                main()
            ''',
        "data.txt": "found\n",
    }
    project = init(host(tmp_path, files), "--entry", "train_plain.py", "--entry-pattern", "script")
    source = project.train_py.read_text()
    tree_ = ast.parse(source)
    assert isinstance(tree_.body[0], ast.Expr) and isinstance(tree_.body[1], ast.ImportFrom)  # docstring, __future__ first
    knobs = [n.targets[0].id for n in tree_.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)]
    assert knobs[:3] == ["RUN_NOTE", "LEARNING_RATE", "WARMUP_STEPS"]
    assert "default=WARMUP_STEPS" in source
    done = project.ar("run", "--set", "LEARNING_RATE=0.1", "--set", "WARMUP_STEPS=3", check=True)
    assert "ok/advance" in done.stdout
    log = (project.expr / "runs" / "r0001" / "run.log").read_text()
    assert "data=found warmup=3" in log  # __file__ still names the host file; defaults moved
    assert project.result("r0001")["primary"]["value"] == pytest.approx(0.5)
    # the hoisted --save_dir default gives way to $AR_CKPT_DIR: the checkpoint is the run's
    assert (project.expr / "best_ckpt" / "ckpt" / "weights.txt").read_text() == "0.1"
    assert not (tmp_path / "saved").exists()


@pytest.mark.parametrize(
    ("files", "entry", "pattern"),
    [
        ({"a.py": "import argparse\n"}, "a.py", "argparse-cli"),
        ({"a.py": "import click\n"}, "a.py", "argparse-cli"),
        ({"a.py": "from transformers import HfArgumentParser\n"}, "a.py", "argparse-cli"),
        ({"a.py": "import hydra\n@hydra.main(config_path='c')\ndef m(cfg): pass\n"}, "a.py", "hydra"),
        ({"a.py": "X = 1\nprint(X)\n"}, "a.py", "script"),
        ({"p/__init__.py": "", "p/t.py": "def fit(): return 1\n"}, "p.t:fit", "function"),
    ],
)
def test_the_pattern_is_detected_from_the_source(tmp_path: Path, files: dict, entry: str, pattern: str) -> None:
    project = init(host(tmp_path, files), "--entry", entry)
    assert json.loads(project.ar("status", "--json", check=True).stdout)["entry"]["pattern"] == pattern
    compile(project.train_py.read_text(), "train.py", "exec")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((), ("--entry", "--example")),
        (("--entry", "missing.py"), ("missing.py",)),
        (("--entry", "../outside.py"), ("outside.py",)),
        (("--entry", "no.such.module"), ("no.such.module",)),
        (("--entry", "host.py", "--entry-pattern", "nope"), ("nope",)),
        (("--entry", "host.py:nothing"), ("nothing",)),
        (("--entry", "host.py", "--entry-pattern", "function"), ("module:function",)),
        (("--entry", "host.py", "--cli-args-json", "{"), ("--cli-args-json",)),
        (("--entry", "host.py:fit", "--cli-args-json", "[1]"), ("object",)),
        (("--entry", "host.py", "--entry-pattern", "hydra", "--cli-args-json", '{"a": 1}'), ("list",)),
        (("--entry", "host.py", "--entry-pattern", "script", "--cli-args-json", "[]"), ("script",)),
        (("--example", "--entry", "host.py"), ("--example",)),
    ],
)
def test_bad_entries_are_one_line_and_leave_nothing(tmp_path: Path, args: tuple, words: tuple) -> None:
    host(tmp_path, {"host.py": "import argparse\ndef fit(lr=1):\n    return lr\n"})
    (tmp_path.parent / "outside.py").write_text("print(1)\n")
    before = tree(tmp_path)
    done = Project(tmp_path).ar("init", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min", *args)
    assert_one_line_error(done, *words)
    assert tree(tmp_path) == before


def test_a_hand_written_train_py_imports_the_project_modules(tmp_path: Path) -> None:
    project = init(host(tmp_path, MODEL), "--example")
    project.write_train("from mypkg import model\nprint(f'val_loss={model.loss(0.2)}')\n")
    project.ar("run", check=True)
    assert project.result("r0001")["status"] == "ok"
    assert project.result("r0001")["primary"]["value"] == pytest.approx(0.6)


def test_hydra_pattern_puts_the_job_output_into_the_run(tmp_path: Path, hosts_python: Path) -> None:
    files = {
        **MODEL,
        "app/main.py": """\
            import os

            import hydra
            from mypkg import model

            @hydra.main(version_base=None, config_path="conf", config_name="config")
            def main(cfg):
                os.makedirs(os.path.dirname(cfg.ckpt_path), exist_ok=True)
                open(cfg.ckpt_path, "w").write(str(cfg.optimizer.lr))
                print(f"seed={cfg.seed} val_loss={model.loss(cfg.optimizer.lr)}")

            if __name__ == "__main__":
                main()
            """,
        "app/conf/config.yaml": "defaults:\n  - optimizer: sgd\n  - _self_\nseed: 7\nckpt_path: ${hydra:runtime.output_dir}/checkpoints/best.pt\n",
        "app/conf/optimizer/sgd.yaml": "lr: 0.01\n",
        "app/conf/optimizer/adam.yaml": "lr: 0.05\n",
    }
    project = init(host(tmp_path / "my project", files), "--entry", "app/main.py", "--runner", f"{hosts_python} {{train_py}}")
    source = project.train_py.read_text()
    assert "#   optimizer: adam, sgd" in source and "SEED_KEY = 'seed'" in source
    project.ar("run", check=True)
    done = project.ar("run", "--set", "HYDRA_OVERRIDES=['optimizer=adam', 'optimizer.lr=0.09']", "--note", "adam", check=True)
    assert "advance" in done.stdout, done.stdout
    assert project.result("r0002")["primary"]["value"] == pytest.approx(0.51)
    run_dir = project.expr / "runs" / "r0002"
    assert (run_dir / "hydra" / ".hydra" / "config.yaml").is_file()  # a path with a space, quoted for Hydra
    assert (project.expr / "best_ckpt" / "checkpoints" / "best.pt").read_text() == "0.09"
    assert not (tmp_path / "my project" / "outputs").exists()


# ------------------------------------------------------------------------------ hosts that try to trip it

SCRIPT_TRAPS = {
    # a name bound in a try block, then a constant of that name: moving the constant would change the value
    "try_binding": "try:\n    import nothing_here\n    WIDTH = 8\nexcept ImportError:\n    WIDTH = 4\nWIDTH = 128\nprint(f'val_loss={WIDTH}')\n",
    # after a star import any constant may be shadowed: nothing moves
    "star_import": "from os.path import *\nBATCH = 64\nprint(f'val_loss={BATCH}')\n",
    # an option default named like a local of the function must not become that local
    "local_name": (
        "import argparse\n"
        "def main():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.add_argument('--batch-size', type=int, default=8)\n"
        "    args = p.parse_args([])\n"
        "    BATCH_SIZE = args.batch_size\n"
        "    print(f'val_loss={BATCH_SIZE}')\n"
        "main()\n"
    ),
    # an option default and an if-bound module name of the same upper-case name
    "if_binding": (
        "import argparse, sys\n"
        "if len(sys.argv) > 5:\n    WIDTH = 1\nelse:\n    WIDTH = 999\n"
        "p = argparse.ArgumentParser()\np.add_argument('--width', type=int, default=7)\n"
        "print(f'val_loss={p.parse_args().width}')\n"
    ),
    # a PEP 263 coding line and non-ASCII text: Python decodes it, and so must ar
    "latin1": "# -*- coding: latin-1 -*-\n\"\"\"Gr\xfc\xdfe.\"\"\"\nNAME = '\xe4'\nprint(f'val_loss={len(NAME)}')\n",
    "bom": "\ufeffLR = 3\nprint(f'val_loss={LR}')\n",
}


@pytest.mark.parametrize("name", sorted(SCRIPT_TRAPS))
def test_the_script_pattern_runs_the_baseline_as_the_host_does(tmp_path: Path, name: str) -> None:
    text = SCRIPT_TRAPS[name]
    encoding = "latin-1" if name == "latin1" else "utf-8"
    (tmp_path / "host.py").write_bytes(text.encode(encoding))
    direct = subprocess.run([sys.executable, "host.py"], cwd=tmp_path, capture_output=True, text=True, check=True).stdout
    project = init(tmp_path, "--entry", "host.py", "--entry-pattern", "script")
    project.ar("run", check=True)
    assert (project.expr / "runs" / "r0001" / "run.log").read_text().strip() == direct.strip()


def test_script_knobs_for_checkpoints_and_seeds_stay_settable(tmp_path: Path) -> None:
    host(tmp_path, {"host.py": """\
        import argparse, os
        OUT = 10  # output features: a number, never a checkpoint directory
        p = argparse.ArgumentParser()
        p.add_argument("--save_dir", default="saved")
        p.add_argument("--seed", type=int, default=0)
        a = p.parse_args()
        os.makedirs(a.save_dir, exist_ok=True)
        print(f"seed={a.seed} out={OUT} val_loss={a.seed + OUT}")
        """})
    project = init(tmp_path, "--entry", "host.py", "--entry-pattern", "script")
    project.ar("run", check=True)
    assert "seed=0 out=10" in (project.expr / "runs" / "r0001" / "run.log").read_text()  # no AR_SEED without repeats
    done = project.ar("run", "--set", "SEED=5", "--set", "OUT=3", "--set", "SAVE_DIR='x'", "--note", "set")
    assert done.returncode == 0, done.stderr
    assert "seed=5 out=3" in (project.expr / "runs" / "r0002" / "run.log").read_text()
    assert (project.expr / "runs" / "r0002" / "ckpt").is_dir() and not (tmp_path / "x").exists()  # still $AR_CKPT_DIR


@pytest.mark.parametrize(
    ("source", "pattern"),
    [
        ('"""No argparse here, and no @hydra.main either."""\nX = 1  # fire up the training\nprint(X)\n', "script"),
        ("# TrainingArguments were used once\nimport argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', default=1)\n", "argparse-cli"),
        ("from hydra import main as entry\n@entry(config_path='c')\ndef m(cfg): pass\n", "hydra"),
        ("import sys\nprint(sys.argv)\n", "argparse-cli"),
    ],
)
def test_detection_reads_the_code_not_its_comments(tmp_path: Path, source: str, pattern: str) -> None:
    project = init(host(tmp_path, {"a.py": source}), "--entry", "a.py")
    status = json.loads(project.ar("status", "--json", check=True).stdout)
    assert status["entry"]["pattern"] == pattern
    assert "--output_dir" not in project.train_py.read_text()  # only an HfArgumentParser of TrainingArguments gets it


def test_a_script_without_py_a_src_module_and_a_module_with_relative_imports(tmp_path: Path) -> None:
    host(tmp_path, {
        "bin/train": "#!/usr/bin/env python3\nimport sys\nprint(f'val_loss={len(sys.argv)}')\n",
        "src/srcpkg/__init__.py": "",
        "src/srcpkg/cli.py": "import argparse\nfrom . import util\np = argparse.ArgumentParser()\nprint(f'val_loss={util.V}')\np.parse_args()\n",
        "src/srcpkg/util.py": "V = 5\n",
        "relpkg/__init__.py": "",
        "relpkg/run.py": "from .util import V\nprint(f'val_loss={V}')\n",
        "relpkg/util.py": "V = 6\n",
    })
    for slug, entry, value in (("a", "bin/train", 1), ("b", "srcpkg.cli", 5), ("c", "relpkg.run", 6)):
        project = Project(tmp_path, slug)
        project.ar("init", "--expr", slug, "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min", "--entry", entry, check=True)
        project.ar("run", "--expr", slug, check=True)
        assert project.result("r0001")["primary"]["value"] == value, (entry, (project.expr / "runs" / "r0001" / "run.log").read_text())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--entry", "host.py", "--cli-args-json", '["--epochs", 3]'), ("strings",)),
        (("--entry", "host.py", "--cli-args-json", '{"--epochs": NaN}'), ("NaN",)),
        (("--entry", "host.py", "--cli-args-json", '{"--cfg": {"a": 1}}'), ("--cli-args-json",)),
        (("--entry", "host.py:fit", "--cli-args-json", '{"bogus": 1}'), ("bogus",)),
        (("--entry", "host.py:later"), ("async",)),
        (("--entry", "a\nb.py"), ("usable",)),
        (("--entry", "broken.py:f"), ("parse",)),
    ],
)
def test_entries_that_could_never_run_are_refused_at_init(tmp_path: Path, args: tuple, words: tuple) -> None:
    host(tmp_path, {"host.py": "import argparse\ndef fit(lr=1):\n    return lr\nasync def later():\n    return 1\n", "broken.py": "def f(:\n"})
    before = tree(tmp_path)
    done = Project(tmp_path).ar("init", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min", *args)
    assert_one_line_error(done, *words)
    assert tree(tmp_path) == before


def test_under_baseline_repeats_the_host_seed_option_gets_a_new_seed_each_run(tmp_path: Path) -> None:
    host(tmp_path, {"seeded.py": "import argparse\np = argparse.ArgumentParser()\np.add_argument('--seed', type=int, default=0)\n"
                                 "print(f'seed={p.parse_args().seed} val_loss=1')\n"})
    project = init(tmp_path, "--entry", "seeded.py")
    project.ar("session", "--baseline-repeats", "2", check=True)
    project.ar("run", check=True)
    seeds = [(project.expr / "runs" / r / "run.log").read_text().split()[0] for r in ("r0001", "r0002")]
    assert seeds == ["seed=1", "seed=2"]
