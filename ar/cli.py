"""Wires typer to the command functions; nothing else. Each command's logic lives in
ar/commands/<name>.py and is imported only when that command runs (start-up time matters:
the agent calls `ar` every iteration)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path
from typing import Annotated, List, Optional

import typer

from ar.errors import EXIT_USAGE, PROG, ArError, as_typed

app = typer.Typer(add_completion=False, no_args_is_help=True, context_settings={"help_option_names": ["-h", "--help"]})


def _print_version(value: bool) -> None:
    if value:
        from ar import __version__

        print(f"autoresearch {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """autoresearch helper runtime: one command per ML experiment iteration."""

def _finite(param: typer.CallbackParam, value: Optional[float]) -> Optional[float]:
    """Every float flag: NaN or inf would make a limit or a comparison silently meaningless."""
    if value is not None and not math.isfinite(value):
        flag = param.opts[0] if param.opts else param.name
        raise ArError(f"{flag} {value} is not a finite number", f"give {flag} a number such as 0.5")
    return value


Expr = Annotated[Optional[str], typer.Option("--expr", help="Experiment slug (default: the current one).")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


@app.command()
def init(
    expr: Annotated[str, typer.Option("--expr", help="Slug of the new experiment, e.g. 261122-lr-warmup.")],
    goal: Annotated[str, typer.Option(help="What the experiment should achieve.")],
    primary_metric: Annotated[str, typer.Option(help="Metric name the training reports, e.g. val_loss.")],
    primary_direction: Annotated[str, typer.Option(help="min or max.")],
    runner: Annotated[str, typer.Option(help="Launch command; {python} and {train_py} are filled in.")] = "{python} {train_py}",
    seconds: Annotated[int, typer.Option(help="Time limit per run.")] = 300,
    metric_backend: Annotated[str, typer.Option(help="Where metrics come from: log, wandb, hf-trainer, lightning-csv, mlflow, tensorboard, custom or auto.")] = "log",
    constraints: Annotated[Optional[List[str]], typer.Option(help="Hard limit 'name<=value' (repeatable).")] = None,
    mutation_scope: Annotated[str, typer.Option(help="What the agent may change in train.py.")] = "",
    log_pattern: Annotated[Optional[str], typer.Option(help="Regex with a {name} placeholder, or (?P<name>) and (?P<value>) groups.")] = None,
    tb_events_glob: Annotated[Optional[str], typer.Option(help="TensorBoard event files, relative to the project root; {run_dir} allowed.")] = None,
    metric_extract_code: Annotated[Optional[str], typer.Option(help="Source of extract_metrics(run_dir, log_tail) for the custom backend.")] = None,
    checkpoint_glob: Annotated[Optional[str], typer.Option(help="Checkpoint files or dirs, relative to the project root; {run_dir} allowed.")] = None,
    metrics_glob: Annotated[Optional[str], typer.Option(help="trainer_state.json / metrics.csv files for hf-trainer, lightning-csv; {run_dir} allowed.")] = None,
    mlflow_tracking_uri: Annotated[Optional[str], typer.Option(help="The MLflow store the training logs to (sqlite:///... or http://...).")] = None,
    entry: Annotated[Optional[str], typer.Option(help="Your training: a script, a module, or module:function.")] = None,
    entry_pattern: Annotated[Optional[str], typer.Option(help="How train.py drives it: argparse-cli, hydra, function or script (detected).")] = None,
    cli_args_json: Annotated[Optional[str], typer.Option(help="Fixed arguments: a JSON list or object (hydra: overrides; function: kwargs).")] = None,
    example: Annotated[bool, typer.Option("--example", help="Write the toy demo train.py instead of driving your code.")] = False,
    launcher: Annotated[Optional[str], typer.Option(help="Build the runner for python, torchrun, accelerate or deepspeed.")] = None,
    nproc_per_node: Annotated[int, typer.Option(help="Processes (GPUs) per run for --launcher.")] = 1,
) -> int:
    """Scaffold an experiment and print its slug."""
    from ar.commands.init import init_experiment, launcher_runner

    if launcher is not None:
        runner = launcher_runner(launcher, nproc_per_node, runner)
    print(
        init_experiment(
            Path.cwd(), expr, goal, primary_metric, primary_direction, runner, seconds, metric_backend,
            constraints, mutation_scope, log_pattern, tb_events_glob, metric_extract_code, checkpoint_glob,
            metrics_glob=metrics_glob, mlflow_tracking_uri=mlflow_tracking_uri,
            entry=entry, entry_pattern=entry_pattern, cli_args_json=cli_args_json, example=example,
        )
    )
    return 0


@app.command()
def session(
    expr: Expr = None,
    seconds: Annotated[Optional[str], typer.Option(help="Time limit per run, or auto: 2x the baseline's wall time (the current limit caps it).")] = None,
    max_runs: Annotated[Optional[int], typer.Option(help="Stop after this many runs.")] = None,
    plateau: Annotated[Optional[int], typer.Option(help="Stop after N scored runs without improvement.")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Stop once the best reaches this value.", callback=_finite)] = None,
    unlimited: Annotated[bool, typer.Option("--unlimited", help="Clear max-runs, plateau and threshold.")] = False,
    max_failures: Annotated[Optional[int], typer.Option(help="Stop after N crashes/timeouts/invalids in a row.")] = None,
    min_delta: Annotated[Optional[float], typer.Option(help="A gain must exceed this (absolute) to advance.", callback=_finite)] = None,
    min_rel_delta: Annotated[Optional[float], typer.Option(help="A gain must exceed this fraction of |best| to advance.", callback=_finite)] = None,
    chain_mode: Annotated[Optional[str], typer.Option(help="disabled, max_n or unlimited.")] = None,
    chain_max: Annotated[Optional[int], typer.Option(help="Follow-up experiments allowed with max_n.")] = None,
    resume: Annotated[Optional[str], typer.Option(help="continue, revert-best, or fresh (wipes runs and best; needs --yes).")] = None,
    runner: Annotated[Optional[str], typer.Option(help="Change the launch command; {python} and {train_py} are filled in.")] = None,
    max_changed_lines: Annotated[Optional[int], typer.Option(help="Refuse a train.py changing more lines than this against the best (0: no limit).")] = None,
    baseline_repeats: Annotated[Optional[int], typer.Option(help="Run the baseline this many times with new seeds; their spread is the noise.")] = None,
    confirm: Annotated[Optional[int], typer.Option(help="Re-run an apparent gain N times; it advances only if the mean still beats the best.")] = None,
    noise_k: Annotated[Optional[float], typer.Option(help="With a measured spread, a gain must exceed noise_k * sigma (default 2).", callback=_finite)] = None,
    prefer_simpler: Annotated[Optional[str], typer.Option(help="on: a smaller train.py within the noise floor of the best advances; off.")] = None,
    slots: Annotated[Optional[int], typer.Option(help="Runs in flight at once (`ar submit`); 1: one at a time.")] = None,
    gpus_per_slot: Annotated[Optional[int], typer.Option(help="GPUs per slot, given in CUDA_VISIBLE_DEVICES (default 1 with several slots; 0: leave it alone).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="Where runs execute: local or slurm.")] = None,
    partition: Annotated[Optional[str], typer.Option(help="slurm: the partition jobs go to.")] = None,
    sbatch_args: Annotated[Optional[str], typer.Option(help="slurm: more sbatch arguments, e.g. '--gres=gpu:1 --mem=16G'.")] = None,
    ack_baseline: Annotated[bool, typer.Option("--ack-baseline", help="Record that the first run is the baseline.")] = False,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm --resume fresh.")] = False,
    json: Json = False,
) -> int:
    """Show the loop settings, or set them."""
    from ar.commands.session import session_command

    return session_command(
        expr, json, seconds=seconds, max_runs=max_runs, plateau=plateau, threshold=threshold, unlimited=unlimited,
        max_failures=max_failures, min_delta=min_delta, min_rel_delta=min_rel_delta, chain_mode=chain_mode, chain_max=chain_max, resume=resume, runner=runner, max_changed_lines=max_changed_lines, baseline_repeats=baseline_repeats, confirm=confirm, noise_k=noise_k, prefer_simpler=prefer_simpler, ack_baseline=ack_baseline, yes=yes,
        slots=slots, gpus_per_slot=gpus_per_slot, backend=backend, partition=partition, sbatch_args=sbatch_args,
    )


@app.command()
def run(
    expr: Expr = None,
    seconds: Annotated[Optional[int], typer.Option(help="Time limit for this run (default: the session's).")] = None,
    wait: Annotated[Optional[float], typer.Option(help="Return after S seconds if the run is still going (exit 3).", callback=_finite)] = None,
    set: Annotated[Optional[List[str]], typer.Option("--set", help="NAME=VALUE: set a top-level constant of train.py first (repeatable; Python literals).")] = None,
    note: Annotated[Optional[str], typer.Option("--note", help="Set RUN_NOTE in train.py first.")] = None,
) -> int:
    """Run one iteration.

    Snapshot, launch, watch, judge, then keep or restore train.py.
    """
    from ar.commands.run import run_command

    return run_command(expr, seconds, wait, set or [], note)


@app.command()
def submit(
    expr: Expr = None,
    seconds: Annotated[Optional[int], typer.Option(help="Time limit for this run (default: the session's).")] = None,
    set: Annotated[Optional[List[str]], typer.Option("--set", help="NAME=VALUE: set a top-level constant of train.py first (repeatable; Python literals).")] = None,
    note: Annotated[Optional[str], typer.Option("--note", help="Set RUN_NOTE in train.py first.")] = None,
) -> int:
    """Start train.py on a free slot (or queue it); return at once.

    train.py is restored to the best at once; collect results with `ar wait --any`.
    """
    from ar.commands.run import run_command

    return run_command(expr, seconds, None, set or [], note, submit=True)


@app.command()
def smoke(
    expr: Expr = None,
    seconds: Annotated[int, typer.Option(help="Stop it after this long (a long training need not finish).")] = 60,
) -> int:
    """Try train.py under the watchdog, recording nothing.

    Says whether it started, whether the primary metric and a checkpoint appeared, and the error line of a crash.
    """
    from ar.commands.smoke import smoke_command

    return smoke_command(expr, seconds)


@app.command()
def wait(
    expr: Expr = None,
    wait: Annotated[Optional[float], typer.Option(help="Return after S seconds if the run is still going (exit 3).", callback=_finite)] = None,
    any_run: Annotated[bool, typer.Option("--any", help="The next run to finish, of all in flight (with --slots; the default there).")] = False,
) -> int:
    """Re-attach to the running iteration.

    Prints what `ar run` would have printed.
    """
    from ar.commands.attach import wait_command

    return wait_command(expr, wait, any_run)


@app.command()
def stop(
    expr: Expr = None,
    all_runs: Annotated[bool, typer.Option("--all", help="Interrupt every run in flight (needed when there are several).")] = False,
) -> int:
    """Interrupt the running iteration (verdict: interrupted)."""
    from ar.commands.attach import stop_command

    return stop_command(expr, all_runs)


@app.command()
def status(
    expr: Expr = None,
    compact: Annotated[bool, typer.Option("--compact", help="At most 10 lines (the default view).")] = False,
    last: Annotated[int, typer.Option(help="Also list the last N runs, one line each.")] = 0,
    json: Json = False,
) -> int:
    """Where the experiment stands.

    Best, counts, termination progress.
    """
    from ar.commands.status import status_command

    return status_command(expr, compact, last, json)


@app.command()
def tail(
    expr: Expr = None,
    run: Annotated[Optional[str], typer.Option("--run", help="Run id (default: the last run).")] = None,
    lines: Annotated[int, typer.Option(help="At most this many lines.")] = 30,
) -> int:
    """End of a run's log, focused on its last traceback."""
    from ar.commands.tail import tail_command

    return tail_command(expr, run, lines)


@app.command()
def report(
    expr: Expr = None,
    json: Json = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Also draw the progress into this PNG (needs the plot extra: matplotlib).")] = None,
    html: Annotated[Optional[Path], typer.Option("--html", help="Also write the morning page: one self-contained HTML file.")] = None,
) -> int:
    """Bounded Markdown summary of the experiment."""
    from ar.commands.report import report_command

    return report_command(expr, json, plot, html)


@app.command()
def chain_init(
    new_slug: Annotated[str, typer.Option(help="Slug of the follow-up experiment.")],
    rationale: Annotated[str, typer.Option(help="Why this follow-up, from the parent's report (recorded verbatim).")],
    from_expr: Annotated[Optional[str], typer.Option("--from-expr", "--expr", help="The parent experiment (default: the current one).")] = None,
    goal: Annotated[Optional[str], typer.Option(help="Goal of the follow-up (default: the parent's).")] = None,
    parent_ckpt: Annotated[Optional[str], typer.Option(help="Checkpoint its runs get as AR_PARENT_CKPT (default: the parent's best checkpoint).")] = None,
    mutation_scope: Annotated[Optional[str], typer.Option(help="What the agent may change (default: the parent's).")] = None,
    primary_metric: Annotated[Optional[str], typer.Option(help="Metric name (default: the parent's).")] = None,
    primary_direction: Annotated[Optional[str], typer.Option(help="min or max (default: the parent's).")] = None,
    runner: Annotated[str, typer.Option(help="Launch command, or inherit.")] = "inherit",
    seconds: Annotated[str, typer.Option(help="Time limit per run, or inherit.")] = "inherit",
    constraints: Annotated[Optional[List[str]], typer.Option(help="Hard limit 'name<=value' (repeatable), none, or inherit.")] = None,
) -> int:
    """Create the follow-up experiment of a chain and print its slug."""
    from ar.commands.chain_init import ChainRequest, chain_init_command

    request = ChainRequest(
        from_expr, new_slug, goal, parent_ckpt, mutation_scope, primary_metric, primary_direction,
        rationale, runner, seconds, tuple(constraints) if constraints else ("inherit",),
    )
    print(chain_init_command(Path.cwd(), request))
    return 0


@app.command()
def doctor(json: Json = False) -> int:
    """Preflight checks of this machine and project.

    uv, python, the project's interpreter, torch, GPU, metric libraries, disk, stale sentinels.
    """
    from ar.commands.doctor import doctor_command

    return doctor_command(json)


@app.command()
def shim() -> int:
    """Point .autoresearch/ar.py at this installation.

    Run it in the project root after moving or reinstalling autoresearch.
    """
    from ar.layout import find_project
    from ar.shim import write_shim

    project = find_project()
    write_shim(project)
    print(f"{project.shim} runs {sys.executable}")
    return 0


@app.command()
def demo(
    dir: Annotated[Optional[Path], typer.Option("--dir", help="Build the demo project here (default: a temp dir).")] = None,
) -> int:
    """Five real iterations on a throwaway project.

    Builds it, then drives `ar run` as an agent would.
    """
    from ar.commands.demo import demo_command

    return demo_command(dir)


def _build_only(name: str) -> None:
    """typer builds a parser for every registered command on each call (~10 ms here); when the
    invoked command is known, register only that one. The callback keeps `ar <command>` a group."""
    chosen = [c for c in app.registered_commands if c.callback.__name__ == name.replace("-", "_")]
    if chosen:
        app.registered_commands = chosen


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if os.environ.get("AR_SHIM_HEAL"):
        from ar.shim import heal_shim

        heal_shim()
    _build_only(args[0] if args else "")
    _exit(_invoke(args, debug))


def _invoke(args: list[str], debug: bool) -> int:
    import click

    try:
        code = app(args=args, prog_name=PROG, standalone_mode=False)
    except ArError as exc:
        if debug:
            raise
        print(exc.line(), file=sys.stderr)
        return exc.code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        # one line, like every other error: the problem and where the flags are listed
        command = " ".join(["ar", *(exc.ctx.command_path.split()[1:] if exc.ctx else [])])
        print(as_typed(f"ar: {exc.format_message()} (fix: see `{command} --help`)"), file=sys.stderr)
        return EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        return 1
    except (click.exceptions.Abort, KeyboardInterrupt):
        print("ar: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug in ar: still one line for the agent; --debug shows where
        if debug:
            raise
        print(f"ar: internal error: {type(exc).__name__}: {exc} (fix: rerun with --debug and report it)", file=sys.stderr)
        return 1
    return code if isinstance(code, int) else 0


def _exit(code: int) -> None:
    """Flush and leave without the interpreter's teardown (~15 ms of every command, which the
    agent pays each iteration); every file `ar` writes is closed before this point."""
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except BrokenPipeError:
        code = code or 1
    os._exit(code)
