"""The mlflow backend on stores written by real MLflow 3.17.2: SQLite, a file store, a real tracking
server over REST, and MLflow's own default store, which the tests ask MLflow itself for.

Each store gets a run from before `started` (never counted) and the run's own; MLflow's own record
(`get_run(...).data.metrics`) comes back as JSON for comparison.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import Project, clean_env, printing, run_python

from ar.layout import ExperimentPaths, RunPaths
from ar.metrics import Extraction, extract_metrics
from ar.metrics.errors import MetricsError
from ar.metrics.mlflow_store import Store, auth_headers, parse_uri, read_mlflow, resolve_store
from ar.settings import Experiment

LOG_RUNS = """
import json, os, sys, time
os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # mlflow 3 writes a file store only when asked to
import mlflow
from mlflow import MlflowClient


def log_runs(uri):
    # a run before `started`, then the run's own: steps out of order, NaN, inf, a nested key
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run():
        mlflow.log_metric("val_loss", 9.0)
    time.sleep(0.05)
    started = time.time()
    with mlflow.start_run() as run:
        for step, value in [(0, 1.0), (1, 0.5), (5, 0.25), (3, 0.4)]:
            mlflow.log_metric("val_loss", value, step=step)  # the highest step is the latest
        mlflow.log_metrics({"diverged": float("inf"), "nan_metric": float("nan"), "eval/acc": 0.75})
    return {"started": started, "metrics": MlflowClient().get_run(run.info.run_id).data.metrics}
"""

WRITER = LOG_RUNS + """
root = sys.argv[1]
os.environ.pop("MLFLOW_TRACKING_URI", None)
out = {}
os.chdir(os.path.join(root, "fresh"))
out["default_fresh"] = mlflow.get_tracking_uri()  # what MLflow picks with nothing configured
out["sqlite"] = log_runs("sqlite:///" + os.path.join(root, "sqlite", "mlflow.db"))
out["file"] = log_runs("file://" + os.path.join(root, "legacy", "mlruns"))
mlflow.set_tracking_uri(None)
os.chdir(os.path.join(root, "legacy"))
out["default_legacy"] = mlflow.get_tracking_uri()  # an mlruns/ with data keeps the file store

# a run the training never ended (stopped at the time limit): still RUNNING
mlflow.set_tracking_uri("sqlite:///" + os.path.join(root, "running", "mlflow.db"))
client = MlflowClient()
started = time.time()
run = client.create_run("0")
client.log_metric(run.info.run_id, "val_loss", 0.7, step=1)
done = client.get_run(run.info.run_id)
out["running"] = {"started": started, "metrics": done.data.metrics, "status": done.info.status}
print(json.dumps(out))
"""


def as_ar_reads(metrics: dict[str, float]) -> dict[str, str]:
    """MLflow's record with its SQL stand-in for ±inf (±max float) read back as ±inf; repr so NaN == NaN."""
    return {key: repr(float("inf") * (1 if v > 0 else -1) if abs(v) == sys.float_info.max else v) for key, v in metrics.items()}


def reprs(metrics: dict[str, float] | None) -> dict[str, str]:
    return {key: repr(value) for key, value in (metrics or {}).items()}


def extract(root: Path, started: float, **settings) -> Extraction:
    experiment = Experiment(slug="exp", goal="g", primary_metric="val_loss", primary_direction="min", **settings)
    return extract_metrics(experiment, ExperimentPaths(root, "exp"), RunPaths("r0001", root / "run"), started, sys.executable)


@pytest.fixture(scope="session")
def stores(hosts_python: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mlflow")
    for name in ("fresh", "sqlite", "legacy", "running"):
        (root / name).mkdir()
    return root, json.loads(run_python(hosts_python, WRITER, str(root)).splitlines()[-1])


def test_sqlite_store_gives_mlflows_latest_metrics_of_the_runs_own_run(stores: tuple[Path, dict]) -> None:
    root, out = stores
    record = out["sqlite"]
    got = read_mlflow(Store("sqlite", str(root / "sqlite" / "mlflow.db"), True), record["started"], {})
    assert reprs(got) == as_ar_reads(record["metrics"])
    assert got["val_loss"] == 0.25  # step 5, logged before step 3; the run before `started` (9.0) not counted
    assert record["metrics"]["diverged"] == sys.float_info.max and got["diverged"] == float("inf")


def test_file_store_gives_mlflows_latest_metrics(stores: tuple[Path, dict]) -> None:
    root, out = stores
    record = out["file"]
    got = read_mlflow(Store("file", str(root / "legacy" / "mlruns"), True), record["started"], {})
    assert reprs(got) == reprs(record["metrics"]) and got["eval/acc"] == 0.75


def test_no_run_after_started_is_none(stores: tuple[Path, dict]) -> None:
    root, out = stores
    later = out["running"]["started"] + 60
    assert read_mlflow(Store("sqlite", str(root / "sqlite" / "mlflow.db"), True), later, {}) is None
    assert read_mlflow(Store("file", str(root / "legacy" / "mlruns"), True), later, {}) is None


def test_a_run_still_running_counts(stores: tuple[Path, dict]) -> None:
    root, out = stores
    record = out["running"]
    assert record["status"] == "RUNNING"
    got = read_mlflow(Store("sqlite", str(root / "running" / "mlflow.db"), True), record["started"], {})
    assert got == record["metrics"] == {"val_loss": 0.7}


def test_the_default_store_is_the_one_mlflow_picks(stores: tuple[Path, dict]) -> None:
    root, out = stores
    fresh, legacy = resolve_store(None, {}, root / "fresh"), resolve_store(None, {}, root / "legacy")
    assert fresh == Store("sqlite", parse_uri(out["default_fresh"], Path("/")).location, False)
    assert fresh.location == str(root / "fresh" / "mlflow.db")
    assert legacy == Store("file", parse_uri(out["default_legacy"], Path("/")).location, False)


@pytest.mark.parametrize(
    ("uri", "store"),
    [
        ("sqlite:///mlflow.db", Store("sqlite", "/proj/mlflow.db", True)),  # relative: to the project root
        ("sqlite:///sub/my%20runs.db?timeout=5", Store("sqlite", "/proj/sub/my runs.db", True)),
        ("sqlite:////data/mlflow.db", Store("sqlite", "/data/mlflow.db", True)),
        ("http://tracking:5000/", Store("rest", "http://tracking:5000", True)),
        ("https://mlflow.example.com/prefix", Store("rest", "https://mlflow.example.com/prefix", True)),
        ("file:///data/mlruns", Store("file", "/data/mlruns", True)),
        ("file:./mlruns", Store("file", "/proj/mlruns", True)),
        ("mlruns", Store("file", "/proj/mlruns", True)),
    ],
)
def test_tracking_uris(uri: str, store: Store) -> None:
    assert parse_uri(uri, Path("/proj")) == store


@pytest.mark.parametrize("uri", ["postgresql://u@db/mlflow", "databricks", "sqlite://", "sqlite:///:memory:"])
def test_stores_ar_cannot_read_are_refused_in_one_line(uri: str) -> None:
    with pytest.raises(MetricsError) as error:
        parse_uri(uri, Path("/proj"))
    assert "\n" not in str(error.value)


def test_the_configured_uri_then_the_environment_then_the_default(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "sqlite:///from-env.db"}
    assert resolve_store("http://h:1", env, tmp_path) == Store("rest", "http://h:1", True)
    assert resolve_store(None, env, tmp_path) == Store("sqlite", str(tmp_path / "from-env.db"), True)
    assert resolve_store(None, {}, tmp_path) == Store("sqlite", str(tmp_path / "mlflow.db"), False)


def test_credentials_as_mlflows_client_sends_them() -> None:
    assert auth_headers({"MLFLOW_TRACKING_TOKEN": "t"}) == {"Authorization": "Bearer t"}
    assert auth_headers({"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}) == {"Authorization": "Basic dTpw"}
    assert auth_headers({}) == {}


def test_auto_reads_mlflow_only_where_a_store_exists(stores: tuple[Path, dict], tmp_path: Path) -> None:
    root, out = stores
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.log").write_text("val_loss=5\n")
    nothing = extract(tmp_path, 0, metric_backend="auto")
    assert nothing.source == "log" and "mlflow" not in (nothing.problem or "")
    (tmp_path / "mlflow.db").write_bytes((root / "sqlite" / "mlflow.db").read_bytes())  # MLflow's default place
    found = extract(tmp_path, out["sqlite"]["started"], metric_backend="auto")
    assert found.source == "mlflow" and found.metrics["val_loss"] == 0.25


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "no MLflow database at"), (b"not a database at all, just text" * 40, "is not a readable MLflow database")],
)
def test_a_missing_or_broken_database_is_a_problem_line(tmp_path: Path, content: bytes | None, problem: str) -> None:
    if content is not None:
        (tmp_path / "mlflow.db").write_bytes(content)
    got = extract(tmp_path, 0, metric_backend="mlflow")
    assert got.metrics == {} and problem in got.problem and "\n" not in got.problem


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(hosts_python: Path, tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on a SQLite store, on localhost; its process group is ended afterwards."""
    home = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(home / "server.log", "wb")
    server = subprocess.Popen(
        [str(hosts_python.parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{home}/server.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=home, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180  # ~25 s on a busy 2-core machine: imports and the schema
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not come up: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.25)
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()


def test_tracking_server_over_rest(mlflow_server: str, hosts_python: Path) -> None:
    code = LOG_RUNS + "\nprint(json.dumps(log_runs(sys.argv[1])))\n"
    record = json.loads(run_python(hosts_python, code, mlflow_server).splitlines()[-1])
    got = read_mlflow(parse_uri(mlflow_server, Path("/")), record["started"], {})
    assert reprs(got) == as_ar_reads(record["metrics"]) and got["val_loss"] == 0.25
    assert read_mlflow(parse_uri(mlflow_server + "/", Path("/")), time.time() + 60, {}) is None


def test_an_unreachable_server_is_a_clear_problem_line_end_to_end(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--metric-backend", "mlflow", "--mlflow-tracking-uri", dead, check=True)
    project.write_train(printing("0.5"))
    done = project.ar("run", check=True)
    result = project.result("r0001")
    assert (result["status"], result["metric_source"]) == ("invalid", "mlflow")
    assert f"mlflow: cannot reach the MLflow server at {dead} (Connection refused)" in result["reason"]
    assert "Traceback" not in done.stdout + done.stderr


TRAIN_PY = """
import json, os
import mlflow
from mlflow import MlflowClient

with mlflow.start_run() as run:  # no URI anywhere: MLflow's default store, in the project root
    for step in range(4):
        mlflow.log_metric("val_loss", 1.0 / (step + 2), step=step)
    mlflow.log_metric("train_loss", 0.125)
with open(os.path.join(os.environ["AR_RUN_DIR"], "record.json"), "w") as f:
    json.dump(MlflowClient().get_run(run.info.run_id).data.metrics, f)
"""


def test_mlflow_backend_end_to_end_on_mlflows_default_store(tmp_path: Path, hosts_python: Path) -> None:
    project = Project(tmp_path)
    project.ar("init", "--example", "--expr", "exp", "--goal", "g", "--primary-metric", "val_loss", "--primary-direction", "min",
               "--seconds", "240", "--metric-backend", "mlflow", "--runner", f"{hosts_python} {{train_py}}", check=True)
    project.write_train(TRAIN_PY)
    env = {k: v for k, v in clean_env().items() if not k.startswith("MLFLOW_")}
    done = project.ar("run", env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    result = project.result("r0001")
    record = json.loads((project.expr / "runs" / "r0001" / "record.json").read_text())
    assert (tmp_path / "mlflow.db").is_file()
    assert result["metric_source"] == "mlflow" and result["verdict"] == "advance", result
    assert result["primary"]["value"] == record["val_loss"] == 0.2
    assert result["metrics"]["train_loss"] == record["train_loss"]
