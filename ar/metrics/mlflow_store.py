"""Metrics of the MLflow run the training created during this run, read without MLflow.

Which store (the first that is set): the experiment's `mlflow_tracking_uri`, MLFLOW_TRACKING_URI in
ar's environment (the training inherits it), else MLflow's own default, as mlflow 3.17.2 computes
it in the training's working directory, the project root: `./mlruns` when it already holds an
experiment (a digit-named directory with a meta.yaml), else `sqlite:///mlflow.db`.

Stores read: SQLite (`sqlite:///rel/path.db` relative to the project root, `sqlite:////abs.db`),
opened read-only; a tracking server (`http://`, `https://`) over its REST API; a file store
(`file:` URIs or plain paths), `<experiment>/<run>/meta.yaml` and `metrics/<key>` files.

The run: the newest (by start_time) active run started at or after `started`; its latest metric
values as MLflow defines them (highest step, then timestamp, then value). A run still RUNNING (the
training was stopped at the time limit and never ended it) counts: its metrics are what it logged.
MLflow's SQL stores keep ±inf as ±max float: read back as ±inf, so a diverged run stays non-finite.
"""

from __future__ import annotations

import base64
import http.client
import json
import math
import os
import sqlite3
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Mapping, NamedTuple
from urllib.parse import unquote, urlsplit

from ar.metrics.errors import MetricsError

DEFAULT_DB = "mlflow.db"  # mlflow.store.tracking.DEFAULT_TRACKING_URI, sqlite:///mlflow.db
DEFAULT_FILE_STORE = "mlruns"  # DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH, taken only when it holds data
HTTP_TIMEOUT = 5.0  # seconds per request: a dead server must not hold the iteration
PAGE_SIZE = 1000
_SQL_INF = sys.float_info.max  # SqlAlchemyStore.sanitize_metric_value writes ±inf as this


class Store(NamedTuple):
    kind: str  # "sqlite", "rest" or "file"
    location: str  # a file path, or the server's base URL
    configured: bool  # named by the user; False: MLflow's default


def resolve_store(configured_uri: str | None, environ: Mapping[str, str], root: Path) -> Store:
    """The store the training logged to (see the module doc); MetricsError for a URI ar cannot read."""
    uri = configured_uri or environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return parse_uri(uri, root)
    if _holds_experiments(root / DEFAULT_FILE_STORE):
        return Store("file", str(root / DEFAULT_FILE_STORE), False)
    return Store("sqlite", str(root / DEFAULT_DB), False)


def parse_uri(uri: str, root: Path) -> Store:
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return Store("rest", uri.rstrip("/"), True)
    if scheme == "sqlite":
        # SQLAlchemy's form: sqlite:///relative.db, sqlite:////absolute.db; the query holds options
        path = unquote(uri.split("?", 1)[0][len("sqlite://") :])[1:]
        if not path or path == ":memory:":
            raise MetricsError(f"mlflow store {uri} is in memory: nothing outlives the training")
        return Store("sqlite", str(root / path), True)
    if scheme == "file":
        return Store("file", str(root / unquote(parts.path)), True)
    if scheme == "" and uri not in ("databricks", "databricks-uc", "uc"):  # a plain path is a file store
        return Store("file", str(root / uri), True)
    raise MetricsError(
        f"ar cannot read the mlflow store {uri.split('://')[0]} (it reads sqlite:///, http(s)://, file:); "
        "serve that store with `mlflow server` and pass its http:// URI"
    )


def in_use(store: Store) -> bool:
    """For `auto`: a configured store, or a default one that exists (no lookup elsewhere)."""
    return store.configured or os.path.exists(store.location)


def read_mlflow(store: Store, started: float, environ: Mapping[str, str]) -> dict[str, float] | None:
    """The latest metrics of this run's MLflow run; None when no run started during it."""
    since_ms = math.floor(started * 1000)  # MLflow's start_time: int(time.time() * 1000)
    if store.kind == "sqlite":
        return read_sqlite(Path(store.location), since_ms)
    if store.kind == "rest":
        return read_rest(store.location, since_ms, environ)
    return read_file_store(Path(store.location), since_ms)


def read_sqlite(path: Path, since_ms: int) -> dict[str, float] | None:
    if not path.is_file():
        raise MetricsError(f"no MLflow database at {path}")
    try:
        # mode=ro: reading must never create, migrate or lock the training's database
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise MetricsError(f"cannot open the MLflow database {path}: {exc}") from None
    try:
        run = db.execute(
            "SELECT run_uuid FROM runs WHERE start_time >= ? AND lifecycle_stage = 'active'"
            " ORDER BY start_time DESC, rowid DESC LIMIT 1",
            (since_ms,),
        ).fetchone()
        if run is None:
            return None
        rows = db.execute("SELECT key, value, is_nan FROM latest_metrics WHERE run_uuid = ?", run).fetchall()
    except sqlite3.Error as exc:
        raise MetricsError(f"{path} is not a readable MLflow database ({exc})") from None
    finally:
        db.close()
    return {key: math.nan if is_nan else _unsanitized(value) for key, value, is_nan in rows}


def read_rest(base: str, since_ms: int, environ: Mapping[str, str]) -> dict[str, float] | None:
    headers = auth_headers(environ)
    experiment_ids: list[str] = []
    token = None
    while True:
        page = {"max_results": PAGE_SIZE, "view_type": "ACTIVE_ONLY", **({"page_token": token} if token else {})}
        answer = _post(base, "experiments/search", page, headers)
        experiment_ids += [str(e["experiment_id"]) for e in answer.get("experiments", []) if "experiment_id" in e]
        token = answer.get("next_page_token")
        if not token:
            break
    if not experiment_ids:
        return None
    query = {
        "experiment_ids": experiment_ids,
        "filter": f"attributes.start_time >= {since_ms}",
        "run_view_type": "ACTIVE_ONLY",
        "order_by": ["attributes.start_time DESC"],
        "max_results": 1,
    }
    runs = _post(base, "runs/search", query, headers).get("runs") or []
    if not runs:
        return None
    metrics: dict[str, float] = {}
    for metric in runs[0].get("data", {}).get("metrics", []):
        try:
            metrics[str(metric["key"])] = _unsanitized(float(metric["value"]))  # NaN comes as the string "NaN"
        except (KeyError, TypeError, ValueError):
            continue
    return metrics


def auth_headers(environ: Mapping[str, str]) -> dict[str, str]:
    """The credentials MLflow's own client sends: MLFLOW_TRACKING_TOKEN, else username and password."""
    if environ.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {environ['MLFLOW_TRACKING_TOKEN']}"}
    user, password = environ.get("MLFLOW_TRACKING_USERNAME"), environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def read_file_store(root: Path, since_ms: int) -> dict[str, float] | None:
    runs = []
    for meta in root.glob("*/*/meta.yaml"):  # <experiment id>/<run id>/; deleted ones sit in .trash/
        fields = _yaml_fields(meta)
        start = fields.get("start_time", "")
        if meta.parent.parent.name != ".trash" and start.isdigit() and int(start) >= since_ms and fields.get("lifecycle_stage") == "active":
            runs.append((int(start), meta.parent.name, meta.parent))
    if not runs:
        return None
    metrics_dir = max(runs)[2] / "metrics"
    metrics: dict[str, float] = {}
    for path in sorted(metrics_dir.rglob("*")):  # a key with slashes is a nested path: eval/acc
        if path.is_file():
            latest = _latest_line(path)
            if latest is not None:
                metrics[path.relative_to(metrics_dir).as_posix()] = latest
    return metrics


def _latest_line(path: Path) -> float | None:
    """The value with the highest (step, timestamp, value), as FileStore._get_metric_from_file picks it."""
    best = None
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if not line.endswith("\n") or len(parts) not in (2, 3, 5):
                    continue  # a line cut by a kill, or not MLflow's
                try:
                    # FileStore reads a step only from a 3-field line; 5 fields (with a dataset) read as step 0
                    key = (int(parts[2]) if len(parts) == 3 else 0, int(parts[0]), float(parts[1]))
                except ValueError:
                    continue
                best = key if best is None or key > best else best
    except (OSError, UnicodeDecodeError) as exc:
        raise MetricsError(f"cannot read the MLflow metric file {path}: {exc}") from None
    return None if best is None else best[2]


def _yaml_fields(path: Path) -> dict[str, str]:
    """The top-level `key: value` lines of a run's meta.yaml (all ar needs of it)."""
    fields = {}
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            key, sep, value = line.partition(": ")
            if sep and not line.startswith((" ", "-")):
                fields[key] = value.strip().strip("'\"")
    except (OSError, UnicodeDecodeError):
        pass  # a run written while being listed: not this run's
    return fields


def _post(base: str, endpoint: str, body: dict, headers: dict[str, str]) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        said = _server_message(exc)
        raise MetricsError(f"the MLflow server at {base} answered {exc.code} {exc.reason} to {endpoint}{said}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or exc.reason
        raise MetricsError(f"cannot reach the MLflow server at {base} ({reason})") from None
    except (OSError, http.client.HTTPException) as exc:  # a read timeout, a dropped connection, not HTTP
        raise MetricsError(f"no answer from the MLflow server at {base} ({exc or type(exc).__name__})") from None
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise MetricsError(f"{url} did not answer MLflow JSON: is {base} an MLflow server?")
    return answer


def _server_message(error: urllib.error.HTTPError) -> str:
    """MLflow's own reason ({"error_code", "message"}), short, when the body has one."""
    try:
        message = json.loads(error.read(4096)).get("message")
    except (OSError, ValueError, AttributeError):
        return ""
    return f": {' '.join(str(message).split())[:120]}" if message else ""


def _holds_experiments(mlruns: Path) -> bool:
    """mlflow's _has_existing_mlruns_data: a digit-named directory with a meta.yaml."""
    try:
        with os.scandir(mlruns) as entries:
            return any(e.is_dir() and e.name.isdigit() and os.path.lexists(os.path.join(e.path, "meta.yaml")) for e in entries)
    except OSError:
        return False


def _unsanitized(value: float) -> float:
    return math.copysign(math.inf, value) if abs(value) == _SQL_INF else value
