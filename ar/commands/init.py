"""`ar init`: scaffold an experiment. Validates every input before creating anything, then
builds the experiment in a temporary directory and renames it into place (atomic)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import sys
from pathlib import Path

from ar import results_log
from ar.constraints import parse_constraint
from ar.durable import sha256_file, write_bytes_atomic
from ar.errors import ArError
from ar.experiments import set_current
from ar.judge import MEASURED
from ar.text import utc_time
from ar.layout import ExperimentPaths, ProjectPaths, check_slug
from ar.metrics import BACKENDS
from ar.metrics.custom import FUNCTION as CUSTOM_FUNCTION
from ar.metrics.log import compile_pattern
from ar.render import render
from ar.seal import seal
from ar.settings import DEFAULT_RUNNER, DIRECTIONS, MAX_SECONDS, Experiment, Loop, Session, save_session
from ar.shim import write_shim
from ar.state import LoopState, save_state

# Runs, checkpoints and runtime state never reach the host's git (a `git add -A` would take
# gigabytes); the experiment's small files (train.py, program.md, results.tsv, best.json) may.
GITIGNORE = """\
# written by autoresearch
*/runs/
*/best_ckpt*/
*/.ar-*
!*/.ar-session.json
.chain-*
.init-*
.tmp-*
"""
_LOG_NAME = re.compile(r"[A-Za-z_][\w./-]*", re.ASCII)  # what the default log pattern (bytes, ASCII \w) can find


def init_experiment(
    root: Path,
    slug: str,
    goal: str,
    primary_metric: str,
    primary_direction: str,
    runner: str = DEFAULT_RUNNER,
    seconds: int = 300,
    metric_backend: str = "log",
    constraints: list[str] | None = None,
    mutation_scope: str = "",
    log_pattern: str | None = None,
    tb_events_glob: str | None = None,
    metric_extract_code: str | None = None,
    checkpoint_glob: str | None = None,
    *,
    metrics_glob: str | None = None,
    mlflow_tracking_uri: str | None = None,
    entry: str | None = None,
    entry_pattern: str | None = None,
    cli_args_json: str | None = None,
    example: bool = False,
) -> str:
    project = ProjectPaths(root.resolve())
    paths = project.experiment(check_slug(slug))
    parsed = [parse_constraint(c) for c in constraints or []]
    _validate(goal, primary_metric, primary_direction, runner, seconds, metric_backend, log_pattern)
    _validate_backend_options(metric_backend, tb_events_glob, metric_extract_code, metrics_glob, mlflow_tracking_uri)
    if checkpoint_glob is not None and not checkpoint_glob.strip():
        raise ArError("--checkpoint-glob is empty", "e.g. --checkpoint-glob 'checkpoints/*.pt', or omit it and save to $AR_CKPT_DIR")
    if paths.dir.exists():
        raise ArError(f"experiment '{slug}' already exists ({paths.dir})", "choose another --expr slug")
    host, written = _scaffold(project.root, entry, entry_pattern, cli_args_json, example, primary_metric, primary_direction)
    checkpoint_glob = checkpoint_glob or written.checkpoint_glob
    experiment = Experiment(
        slug=slug,
        goal=goal,
        primary_metric=primary_metric,
        primary_direction=primary_direction,
        runner=runner,
        metric_backend=metric_backend,
        log_pattern=log_pattern,
        tb_events_glob=tb_events_glob,
        metrics_glob=metrics_glob,
        mlflow_tracking_uri=mlflow_tracking_uri,
        checkpoint_glob=checkpoint_glob,
        constraints=tuple(str(c) for c in parsed),
        entry_pattern=host.pattern if host else None,
        entry=host.entry if host else None,
        mutation_scope=mutation_scope or "anything in train.py: model, optimiser, schedule, hyperparameters",
        created_at=utc_time(),
    )
    project.state_dir.mkdir(exist_ok=True)
    staged = ExperimentPaths(project.root, slug, project.state_dir / f".init-{slug}-{os.getpid()}")
    shutil.rmtree(staged.dir, ignore_errors=True)
    try:
        _write_experiment(staged, experiment, seconds, metric_extract_code, written.text)
        os.rename(staged.dir, paths.dir)  # the experiment appears whole or not at all
    except BaseException:
        shutil.rmtree(staged.dir, ignore_errors=True)
        raise
    seal(paths)
    write_shim(project)
    _write_gitignore(project)
    _warn_unmeasured(parsed, primary_metric)
    set_current(project, slug)
    return slug


# --launcher: the runner each launcher needs, all through the project's interpreter ({python}),
# so the launcher of the project's environment runs, whatever is on PATH.
LAUNCHERS = {
    "python": "{python} {train_py}",
    "torchrun": "{python} -m torch.distributed.run --standalone --nproc-per-node {n} {train_py}",
    "accelerate": "{python} -m accelerate.commands.launch --num_processes {n} {train_py}",
    "deepspeed": "{python} -m deepspeed.launcher.runner --num_gpus {n} {train_py}",
}


def launcher_runner(launcher: str, nproc_per_node: int, runner: str) -> str:
    if launcher not in LAUNCHERS:
        raise ArError(f"--launcher {launcher!r} is not known", f"use one of: {', '.join(LAUNCHERS)}")
    if runner != DEFAULT_RUNNER:
        raise ArError("--launcher and --runner both say how to launch", "give one of them")
    if not 1 <= nproc_per_node <= 1024:
        raise ArError(f"--nproc-per-node {nproc_per_node} is out of range", "give the processes per run, e.g. 2")
    runner = LAUNCHERS[launcher]
    if launcher == "accelerate" and nproc_per_node > 1:
        # Without a config file, accelerate would start one single-process run; --multi_gpu makes the
        # processes one distributed run (on a CPU machine too, with ACCELERATE_USE_CPU=1), and port 0
        # lets runs side by side pick their own rendezvous port.
        runner = runner.replace("--num_processes {n}", "--multi_gpu --num_processes {n} --main_process_port 0")
    return runner.replace("{n}", str(nproc_per_node))


def _validate(goal, metric, direction, runner, seconds, backend, log_pattern) -> None:
    if not goal.strip():
        raise ArError("--goal is empty", "say what the experiment should achieve, e.g. --goal 'lower val_loss'")
    if not metric.strip() or len(metric) > 100 or any(ord(ch) < 32 for ch in metric):
        raise ArError(f"--primary-metric {metric!r} is not a usable metric name", "use the name your training prints, e.g. val_loss")
    if direction not in DIRECTIONS:
        raise ArError(f"--primary-direction {direction!r} is not min or max", "use --primary-direction min or max")
    if not runner.strip():
        raise ArError("--runner is empty", f"omit it for the default {DEFAULT_RUNNER!r}")
    if not 1 <= seconds <= MAX_SECONDS:
        raise ArError(f"--seconds {seconds} is out of range", f"give 1 to {MAX_SECONDS} seconds per run")
    if backend not in BACKENDS:
        raise ArError(f"--metric-backend {backend!r} is not available", f"use one of: {', '.join(BACKENDS)}")
    if log_pattern is not None:
        try:
            compile_pattern(log_pattern)
        except ValueError as exc:
            raise ArError(f"--log-pattern: {exc}", "see the README section on metric extraction") from None
    elif backend in ("log", "auto") and not _LOG_NAME.fullmatch(metric):
        raise ArError(
            f"the default log pattern cannot find a metric named {metric!r}",
            "rename the metric to letters, digits, _ . / - or give --log-pattern with a {name} placeholder",
        )


def _validate_backend_options(backend: str, tb_events_glob: str | None, code: str | None, metrics_glob: str | None, mlflow_uri: str | None) -> None:
    if tb_events_glob is not None and (not tb_events_glob.strip() or backend not in ("tensorboard", "auto")):
        raise ArError("--tb-events-glob needs --metric-backend tensorboard or auto, and a pattern", "e.g. --tb-events-glob 'runs/**/events.out.tfevents.*'")
    if metrics_glob is not None and (not metrics_glob.strip() or backend not in ("hf-trainer", "lightning-csv", "auto")):
        raise ArError("--metrics-glob needs --metric-backend hf-trainer, lightning-csv or auto, and a pattern", "e.g. --metrics-glob 'logs/**/metrics.csv'")
    if mlflow_uri is not None and (not mlflow_uri.strip() or backend not in ("mlflow", "auto")):
        raise ArError("--mlflow-tracking-uri needs --metric-backend mlflow or auto, and a URI", "e.g. --mlflow-tracking-uri sqlite:///mlflow.db")
    if (code is not None) != (backend == "custom"):
        raise ArError(
            "--metric-backend custom and --metric-extract-code go together",
            f"give the source of `def {CUSTOM_FUNCTION}(run_dir, log_tail): return {{'val_loss': ...}}` with --metric-backend custom",
        )
    if code is None:
        return
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise ArError(f"--metric-extract-code does not compile (line {exc.lineno}: {exc.msg})", "pass valid Python source") from None
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == CUSTOM_FUNCTION]
    if not functions or len(functions[0].args.args) != 2:
        raise ArError(
            f"--metric-extract-code defines no {CUSTOM_FUNCTION}(run_dir, log_tail)",
            f"define `def {CUSTOM_FUNCTION}(run_dir, log_tail):` returning a dict of metric name -> number",
        )


def _scaffold(root: Path, entry, pattern, cli_args_json, example: bool, metric: str, direction: str):
    """(the host entry or None, the train.py to write): the host's pattern, or the toy example."""
    from ar.entry_patterns import Scaffold, resolve, scaffold

    if example:
        if entry is not None or pattern is not None or cli_args_json is not None:
            raise ArError("--example writes the toy demo, which takes no --entry, --entry-pattern or --cli-args-json", "drop --example to drive your own training")
        return None, Scaffold(render("train.py", {"METRIC": repr(metric), "DIRECTION": repr(direction)}), None)
    if entry is None:
        raise ArError(
            "ar init needs the training to drive: --entry (your script, module or module:function) or --example",
            "e.g. --entry scripts/train.py (the pattern is detected; --entry-pattern argparse-cli|hydra|function|script chooses it)",
        )
    host = resolve(root, entry, pattern)
    return host, scaffold(host, cli_args_json, metric)


def _write_experiment(staged: ExperimentPaths, experiment: Experiment, seconds: int, extract_code: str | None, train: str) -> None:
    staged.dir.mkdir()
    staged.runs.mkdir()
    md = {
        "SLUG": experiment.slug,
        "GOAL": experiment.goal.strip(),
        "METRIC": experiment.primary_metric,
        "DIRECTION": experiment.primary_direction,
        "BACKEND": experiment.metric_backend,
        "CONSTRAINTS": ", ".join(experiment.constraints) or "none",
        "SCOPE": experiment.mutation_scope,
        "RUNNER": experiment.runner,
        "SECONDS": str(seconds),
    }
    staged.program_md.write_text(render("program.md", md), encoding="utf-8")
    prepare = render("prepare.py" if experiment.entry is None else "prepare_host.py", {"SLUG": experiment.slug})
    if extract_code is not None:
        prepare += f"\n\n# The custom metric backend: `ar` calls {CUSTOM_FUNCTION}(run_dir, log_tail) after every run.\n"
        prepare += extract_code.strip() + "\n"
    staged.prepare_py.write_text(prepare, encoding="utf-8")
    staged.train_py.write_text(train, encoding="utf-8")
    staged.baseline_py.write_text(train, encoding="utf-8")
    results_log.create(staged.results)
    save_state(staged, LoopState())
    protected = {p.name: sha256_file(p) for p in (staged.prepare_py, staged.program_md)}
    save_session(staged.session, Session(experiment._replace(protected=protected), Loop(seconds=seconds)))


def _warn_unmeasured(constraints: list, primary_metric: str) -> None:
    """A constraint on a name ar does not measure holds only if the training reports that name."""
    for name in sorted({c.name for c in constraints} - set(MEASURED) - {primary_metric}):
        print(f"ar: note: constraint metric {name} is not measured by ar ({', '.join(MEASURED)}): the training must "
              "report it, or every run is invalid", file=sys.stderr)


def _write_gitignore(project: ProjectPaths) -> None:
    if not project.gitignore.exists():
        write_bytes_atomic(project.gitignore, GITIGNORE.encode())
