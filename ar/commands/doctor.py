"""`ar doctor`: preflight checks, one greppable line each: `ok|warn|FAIL <check>: <detail>`.

Exit 1 when a check FAILs (the loop cannot work until it is fixed), else 0; `warn` lines are
worth reading but do not block. The slow part, asking the project's interpreter about torch, CUDA
and the metric libraries, is one subprocess with a time limit, started first so that the other
checks overlap it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from contextlib import suppress
from pathlib import Path
from typing import NamedTuple

import orjson

from ar.errors import ArError, as_typed
from ar.experiments import resolve_experiment
from ar.layout import ExperimentPaths, ProjectPaths, find_project

PROBE_SECONDS = 60  # a first `import torch` from a cold disk can take tens of seconds
TOOL_SECONDS = 10  # `uv --version`, `nvidia-smi -L`; a wedged driver can hang nvidia-smi
FAIL_FREE_BYTES = 1 << 30  # below this a run's checkpoint or log can fill the disk mid-run
WARN_FREE_BYTES = 10 << 30
LINE_CHARS = 240
SHIM_DOCTOR = "uv run python .autoresearch/ar.py doctor"

# Runs under the project's interpreter, which may be any Python 3: plain syntax, stdlib only. It
# prints what it knows before `import torch`, so a hanging import still leaves an answer. The
# current directory leaves sys.path first: a project's `wandb/` run folder is not the library.
PROBE = r"""
import json, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
info = {"python": "%d.%d.%d" % tuple(sys.version_info[:3]), "executable": sys.executable}

def installed(name):
    try:
        import importlib.util
        spec = importlib.util.find_spec(name)
    except Exception:
        return None
    if spec is None or spec.origin in (None, "namespace"):
        return None
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:
        return "?"

for name in ("wandb", "tensorboard", "tensorboardX"):
    info[name] = installed(name)
print(json.dumps(info), flush=True)
try:
    import torch
    info["torch"] = torch.__version__
    info["torch_cuda"] = torch.version.cuda
    info["cuda_devices"] = torch.cuda.device_count() if torch.cuda.is_available() else 0
except BaseException as exc:
    info["torch_error"] = "%s: %s" % (type(exc).__name__, exc)
print(json.dumps(info), flush=True)
"""


class Check(NamedTuple):
    level: str  # ok | warn | FAIL
    name: str
    detail: str

    def line(self) -> str:
        text = " ".join(f"{self.level} {self.name}: {self.detail}".split())
        return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 3] + "..."


def doctor_command(as_json: bool) -> int:
    project = _project()
    root = project.root if project else Path.cwd()
    python, origin = project_interpreter(root)
    probe = _Spawned([python, "-c", PROBE], PROBE_SECONDS)
    uv = _Spawned(["uv", "--version"], TOOL_SECONDS) if shutil.which("uv") else None
    smi = _Spawned(["nvidia-smi", "-L"], TOOL_SECONDS) if shutil.which("nvidia-smi") else None

    checks = [check_uv(uv), Check("ok", "python", f"{sys.version.split()[0]} (ar's interpreter {sys.executable})")]
    info = probe.result()
    via_shim = "AR_PROJECT_PYTHON" in os.environ or not (project and project.shim.exists())
    checks += [check_project_python(python, origin, probe, info, via_shim), check_torch(python, probe, info), check_gpu(info, smi)]
    checks += experiment_checks(project, root, info)
    checks.append(check_disk(root))
    if project:
        checks += sentinel_checks(project)

    if as_json:
        print(orjson.dumps({"checks": [c._asdict() for c in checks]}).decode())
    else:
        print("\n".join(c.line() for c in checks))
    return 1 if any(c.level == "FAIL" for c in checks) else 0


def _project() -> ProjectPaths | None:
    try:
        return find_project()
    except ArError:
        return None


def project_interpreter(root: Path) -> tuple[str, str]:
    """The interpreter runs will use, and where that answer came from: the shim's (the one that
    started it), else the project's .venv (what `uv run python` picks there), else an active conda
    environment, else ar's own."""
    if os.environ.get("AR_PROJECT_PYTHON"):
        return os.environ["AR_PROJECT_PYTHON"], "the shim's"
    venv = root / ".venv" / "bin" / "python"
    if os.access(venv, os.X_OK):
        return str(venv), "the project's .venv"
    conda = os.environ.get("CONDA_PREFIX")
    if conda and os.access(Path(conda, "bin", "python"), os.X_OK):
        return str(Path(conda, "bin", "python")), "the active conda env"
    return sys.executable, "ar's own: no shim, .venv or conda env"


class _Spawned:
    """A subprocess with a time limit; result() gives its stdout lines, also after a timeout."""

    def __init__(self, argv: list[str], seconds: float):
        self.seconds = seconds
        self.error: str | None = None
        self.timed_out = False
        self.returncode: int | None = None
        self.stderr = ""
        try:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            self.proc = None
            self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
        self._lines: list[str] | None = None

    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = []
            if self.proc is not None:
                try:
                    out, err = self.proc.communicate(timeout=self.seconds)
                except subprocess.TimeoutExpired:
                    self.timed_out = True
                    with suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)
                    out, err = self.proc.communicate()
                self.returncode = self.proc.returncode
                self.stderr = err.decode(errors="replace").strip()
                self._lines = out.decode(errors="replace").splitlines()
        return self._lines

    def result(self) -> dict | None:
        """The probe's last JSON line (the fullest answer it got to), or None."""
        for line in reversed(self.lines()):
            try:
                data = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(data, dict):
                return data
        return None

    def last_error_line(self) -> str:
        if self.error:
            return self.error
        lines = self.stderr.splitlines()
        return lines[-1] if lines else f"exit code {self.returncode}"


def check_uv(uv: _Spawned | None) -> Check:
    if uv is None:
        return Check("FAIL", "uv", "not on PATH; the skills call ar as `uv run python .autoresearch/ar.py` (fix: pip install uv)")
    lines = uv.lines()
    if uv.timed_out or uv.returncode != 0 or not lines:
        return Check("warn", "uv", f"`uv --version` failed: {uv.last_error_line()}")
    return Check("ok", "uv", f"{lines[0].strip()} ({shutil.which('uv')})")


def check_project_python(python: str, origin: str, probe: _Spawned, info: dict | None, via_shim: bool) -> Check:
    """via_shim: False when a shim exists but this doctor did not come through it, so the
    interpreter checked may not be the one runs use."""
    if info is None:
        why = f"timed out after {probe.seconds}s" if probe.timed_out else probe.last_error_line()
        return Check("FAIL", "project-python", f"{python} ({origin}) does not run: {why} (fix: repair or recreate that environment)")
    hint = "" if via_shim else f"; `{SHIM_DOCTOR}` checks the one runs use"
    return Check("ok", "project-python", f"{info.get('python')} {python} ({origin}){hint}")


def check_torch(python: str, probe: _Spawned, info: dict | None) -> Check:
    if info is None:
        return Check("warn", "torch", "not checked: the project interpreter did not run")
    if info.get("torch"):
        return Check("ok", "torch", f"{info['torch']} (CUDA build {info.get('torch_cuda') or 'none'})")
    if "torch_error" not in info:  # the probe ended inside `import torch`
        what = f"did not finish within {probe.seconds}s" if probe.timed_out else f"crashed ({probe.last_error_line()})"
        return Check("warn", "torch", f"`import torch` {what} in {python}")
    return Check("warn", "torch", f"not importable in {python} ({info['torch_error']}); fine if the training does not use torch")


def check_gpu(info: dict | None, smi: _Spawned | None) -> Check:
    gpus: list[str] = []
    smi_problem = None
    if smi is not None:
        lines = smi.lines()
        if smi.timed_out or smi.returncode != 0:
            smi_problem = f"nvidia-smi failed ({'timed out' if smi.timed_out else smi.last_error_line()})"
        gpus = [m.group(1).strip() for line in lines if (m := re.match(r"GPU \d+: (.*?)(?: \(UUID|$)", line))]
    torch_sees = (info or {}).get("cuda_devices") if (info or {}).get("torch") else None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    mask = f"; CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    if gpus:
        names = ", ".join(f"{gpus.count(n)}x {n}" for n in dict.fromkeys(gpus))
        if torch_sees == 0:
            return Check("warn", "gpu", f"nvidia-smi lists {names} but torch.cuda.is_available() is False (a CPU build of torch?{mask})")
        seen = f"; torch sees {torch_sees}" if torch_sees is not None else ""
        return Check("ok", "gpu", f"{names}{seen}{mask}")
    if torch_sees:
        why = smi_problem or "nvidia-smi not on PATH, so no peak_gpu_mb"
        return Check("ok", "gpu", f"torch sees {torch_sees} CUDA device(s) ({why}){mask}")
    smi_said = smi_problem or ("nvidia-smi lists none" if smi is not None else "nvidia-smi not on PATH")
    torch_said = "torch.cuda.is_available() is False" if torch_sees == 0 else "torch not importable"
    return Check("warn", "gpu", f"no GPU visible ({smi_said}; {torch_said}{mask}); runs use the CPU")


def experiment_checks(project: ProjectPaths | None, root: Path, info: dict | None) -> list[Check]:
    if project is None:
        return [Check("ok", "project", f"no .autoresearch/ in {root} or above (not set up yet); experiment checks skipped")]
    if not project.experiments():
        return [Check("ok", "project", f"{project.state_dir} has no experiment yet; experiment checks skipped")]
    from ar.settings import load_session

    try:
        paths = resolve_experiment(None)
        session = load_session(paths)
    except ArError as exc:
        return [Check("FAIL", "experiment", exc.line().removeprefix("ar: "))]
    experiment = session.experiment
    checks = [
        Check("ok", "experiment", f"{paths.slug} ({experiment.primary_metric} {experiment.primary_direction}, backend {experiment.metric_backend}); "
              + as_typed("`ar smoke` tries its train.py")),
        check_backend(experiment.metric_backend, info),
    ]
    if session.loop.backend == "slurm":
        checks.append(check_slurm(session.loop.partition))
    return checks


def check_slurm(partition: str | None) -> Check:
    """With --backend slurm: the cluster answers, and the partition exists."""
    if shutil.which("sbatch") is None:
        return Check("FAIL", "slurm", "sbatch is not on PATH (fix: run ar on a login node of the cluster, or `ar session --backend local`)")
    try:
        done = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("FAIL", "slurm", f"sinfo did not answer ({exc.__class__.__name__}); is slurmctld reachable? (fix: check SLURM_CONF)")
    if done.returncode != 0:
        return Check("FAIL", "slurm", f"sinfo failed: {(done.stderr or done.stdout).strip()[:160]} (fix: check SLURM_CONF and munge)")
    partitions = {line.split()[0].rstrip("*"): line.split()[1] for line in done.stdout.splitlines() if len(line.split()) == 2}
    if partition and partition not in partitions:
        return Check("FAIL", "slurm", f"partition {partition!r} does not exist (there are: {', '.join(sorted(partitions))}) (fix: `ar session --partition P`)")
    shown = f"partition {partition} {partitions[partition]}" if partition else f"default partition; partitions {', '.join(sorted(partitions))}"
    return Check("ok", "slurm", f"sinfo answers: {shown}")


def check_backend(backend: str, info: dict | None) -> Check:
    """ar reads every metric format itself; the training writes them, so its interpreter needs the library."""
    if backend in ("log", "custom"):
        return Check("ok", "metric-backend", f"{backend}: no library needed")
    if info is None:
        return Check("warn", "metric-backend", f"{backend}: not checked: the project interpreter did not run")
    where = info.get("executable") or "the project interpreter"
    have = {name: info.get(name) for name in ("wandb", "tensorboard", "tensorboardX") if info.get(name)}
    found = ", ".join(f"{name} {version}" for name, version in have.items())
    if backend == "auto":
        return Check("ok", "metric-backend", f"auto: {found or 'neither wandb nor tensorboard installed; runs will use the log backend'}")
    wanted = ("wandb",) if backend == "wandb" else ("tensorboard", "tensorboardX")
    if any(name in have for name in wanted):
        return Check("ok", "metric-backend", f"{backend}: {found}")
    return Check("FAIL", "metric-backend", f"{backend}: {' or '.join(wanted)} is not installed in {where}, so the training cannot log its metrics (fix: install it in the project environment)")


def check_disk(root: Path) -> Check:
    free = shutil.disk_usage(root).free
    detail = f"{free / (1 << 30):.1f} GiB free at {root}"
    if free < FAIL_FREE_BYTES:
        return Check("FAIL", "disk", f"{detail} (fix: free space; runs write logs and checkpoints)")
    if free < WARN_FREE_BYTES:
        return Check("warn", "disk", f"{detail}; checkpoints may not fit")
    return Check("ok", "disk", detail)


def sentinel_checks(project: ProjectPaths) -> list[Check]:
    """Leftovers of killed or stuck runs in every experiment, and of killed `ar init`/`chain-init`."""
    from ar.watchdog import still_alive

    checks: list[Check] = []
    slugs = project.experiments()
    for slug in slugs:
        paths = project.experiment(slug)
        checks += _unclean(paths) + _active(paths)
        for leftover in (paths.best_ckpt_staging, paths.best_ckpt_previous):
            if leftover.exists():
                checks.append(Check("warn", "sentinels", f"{paths.relative(leftover)} left by a killed checkpoint swap; the next command finishes it"))
    for staged in sorted(project.state_dir.glob(".init-*")) + sorted(project.state_dir.glob(".chain-*")):
        if not staged.is_dir():
            continue  # .chain-session.json
        match = re.search(r"-(\d+)$", staged.name)
        if match and still_alive([int(match.group(1))]):
            checks.append(Check("ok", "sentinels", f"{staged.name}: an ar init/chain-init is in progress (pid {match.group(1)})"))
        else:
            checks.append(Check("warn", "sentinels", f"{staged.name} left by a killed ar init/chain-init (fix: delete it; a retried chain-init does)"))
    if not checks:
        checks.append(Check("ok", "sentinels", f"nothing stale in {len(slugs)} experiment(s)"))
    return checks


def _unclean(paths: ExperimentPaths) -> list[Check]:
    if not paths.unclean.exists():
        return []
    from ar.durable import read_json_or_none
    from ar.watchdog import still_alive

    where = paths.relative(paths.unclean)
    record = read_json_or_none(paths.unclean)
    if not isinstance(record, dict):  # `ar run` refuses to guess which processes it meant
        return [Check("FAIL", "sentinels", f"{where} is unreadable; `ar run` refuses (fix: delete it once no process of the run is left)")]
    pids = record.get("pids") if isinstance(record.get("pids"), list) else []
    alive = still_alive([pid for pid in pids if isinstance(pid, int)])
    if alive:
        listed = " ".join(map(str, alive[:8]))
        return [Check("FAIL", "sentinels", f"{where}: pids {listed} of {record.get('run_id')} survived SIGKILL and are alive; `ar run` refuses (fix: end them, then delete it)")]
    return [Check("warn", "sentinels", f"{where}: the processes of {record.get('run_id')} are gone; the next `ar run` clears it")]


def _active(paths: ExperimentPaths) -> list[Check]:
    if not paths.active.exists():
        return []
    from ar.active import active_run
    from ar.lock import IterationLock

    with IterationLock(paths.lock) as lock:
        held = not lock.try_acquire()
    active = active_run(paths) or {}
    what = f"{active.get('run_id', 'a run')} (pid {active.get('pid', '?')})"
    if held:
        return [Check("ok", "sentinels", f"{paths.slug}: {what} is in progress")]
    return [Check("warn", "sentinels", f"{paths.relative(paths.active)} names {what} but no process holds the lock; the next command repairs it")]
