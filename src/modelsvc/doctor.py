"""``modelsvc doctor``: is every backend the settings point at reachable and ready? One row per check.

Each check runs in its own daemon thread with a deadline, so an unreachable host can never hang the command;
a check that runs out of time is reported as failed. Checks only read: nothing is created or migrated
(an absent local SQLite store is reported, not created).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, Field

from modelsvc.config import Settings, mask_uri
from modelsvc.errors import ModelsvcError, ServiceUnavailableError

Status = Literal["ok", "warn", "fail", "skip"]
DEFAULT_TIMEOUT_S = 30.0


class Check(BaseModel):
    """One row of the report. ``fix`` says what to do when the status is ``fail`` or ``warn``."""

    name: str
    status: Status
    detail: str = ""
    fix: str | None = None
    seconds: float = 0.0


class DoctorReport(BaseModel):
    engine: str
    online_store: str
    tracking_uri: str = Field(description="secrets masked")
    ray_address: str
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_if_failed(self) -> None:
        """Raise ServiceUnavailableError (exit 69) naming the failed checks."""
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            raise ServiceUnavailableError(f"{len(self.failed)} of {len(self.checks)} checks failed: {names}")


class _Outcome(Exception):
    """Raised by a check to end with a status other than ok (a plain exception means fail)."""

    def __init__(self, status: Status, detail: str, fix: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.fix = status, detail, fix


CheckFn = Callable[[Settings, float], str]


def check_all(settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DoctorReport:
    """Run every check concurrently, each limited to ``timeout_s`` seconds; never raises for a failed check."""
    specs: list[tuple[str, CheckFn, str]] = [
        ("warehouse.engine", _warehouse_engine, _WAREHOUSE_FIX[settings.warehouse.engine]),
        ("warehouse.raw_events", _raw_events, "load raw events into the table (demo: modelsvc demo-data)"),
        ("warehouse.feature_tables", _feature_tables, "run: modelsvc etl --start-date ... --end-date ..."),
        ("feast.repo", _feast_repo, "set features.repo_path to the Feast repo (the folder with definitions.py)"),
        ("feast.registry", _feast_registry, "run: modelsvc materialize (applies the repo, writes the registry)"),
        ("feast.online_store", _online_store, _ONLINE_FIX[settings.features.online_store]),
        ("mlflow.tracking", _mlflow_tracking, "start the server or fix mlflow.tracking_uri / MLFLOW_TRACKING_URI"),
        ("mlflow.registry", _mlflow_registry, "check the registry URI and the MLflow credentials"),
        ("ray", _ray, "start the cluster (ray start --head) or fix ray.address / RAY_ADDRESS"),
    ]
    started = time.monotonic()
    runners = [_Runner(name, fn, settings, timeout_s, fix) for name, fn, fix in specs]
    for r in runners:
        r.start()
    checks = [r.result(deadline=started + timeout_s) for r in runners]
    return DoctorReport(
        engine=settings.warehouse.engine,
        online_store=settings.features.online_store,
        tracking_uri=mask_uri(settings.tracking_uri()),
        ray_address=settings.ray_address() or "local",
        checks=checks,
    )


class _Runner:
    def __init__(self, name: str, fn: CheckFn, settings: Settings, timeout_s: float, fix: str) -> None:
        self.name, self.fn, self.settings, self.timeout_s, self.fix = name, fn, settings, timeout_s, fix
        self.check: Check | None = None
        # daemon: a check stuck in a socket call must not keep the process alive at exit
        self.thread = threading.Thread(target=self._run, name=f"doctor-{name}", daemon=True)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        try:
            detail = self.fn(self.settings, self.timeout_s)
            check = Check(name=self.name, status="ok", detail=detail)
        except _Outcome as out:
            check = Check(name=self.name, status=out.status, detail=out.detail,
                          fix=out.fix if out.fix is not None else (self.fix if out.status != "skip" else None))
        except ModelsvcError as exc:
            check = Check(name=self.name, status="fail", detail=exc.message, fix=exc.hint or self.fix)
        except Exception as exc:  # any backend error is a failed check, named by its type
            check = Check(name=self.name, status="fail", detail=_one_line(exc), fix=self.fix)
        check.seconds = round(time.monotonic() - self.t0, 3)
        self.check = check

    def result(self, deadline: float) -> Check:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.check is None:
            return Check(name=self.name, status="fail", detail=f"no answer within {self.timeout_s:g}s (timed out)",
                         fix=self.fix, seconds=round(time.monotonic() - self.t0, 3))
        return self.check


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return mask_uri(f"{type(exc).__name__}: {first}"[:300])


def _tcp(host: str, port: int, timeout: float, what: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=min(timeout, 5.0)):
            return
    except OSError as exc:
        raise _Outcome("fail", f"{what} at {host}:{port} is unreachable ({exc.strerror or exc})") from None


# -- warehouse ----------------------------------------------------------------------------------------------

_WAREHOUSE_FIX = {
    "duckdb": "create the warehouse (demo: modelsvc demo-data) or point paths.warehouse at it",
    "hive": "check hive.host/hive.port and that HiveServer2 (or the Spark Thrift server) is running",
}


def _warehouse_engine(settings: Settings, timeout: float) -> str:
    if settings.warehouse.engine == "hive":
        hive = settings.hive
        _tcp(hive.host, hive.port, timeout, "HiveServer2")
        with _open_warehouse(settings) as wh:
            wh.table_exists(settings.tables.raw_events)  # connects and lists tables
        return f"hive {hive.host}:{hive.port}/{hive.database}: connected"
    folder = settings.paths.resolve("warehouse")
    if not folder.is_dir():
        raise _Outcome("fail", f"warehouse folder {folder} does not exist")
    return f"duckdb over {folder}"


def _open_warehouse(settings: Settings):  # type: ignore[no-untyped-def]
    from modelsvc.warehouse import open_warehouse

    return open_warehouse(settings)


def _partitions(settings: Settings, table: str) -> list[str]:
    """``ds`` partitions of ``table``: through the engine, or for the local engine straight from the folders."""
    if settings.warehouse.engine == "duckdb":
        folder = settings.paths.resolve("warehouse") / table
        return sorted(p.name[3:] for p in folder.glob("ds=*") if p.is_dir() and any(p.glob("*.parquet")))
    with _open_warehouse(settings) as wh:
        return [d.isoformat() for d in wh.partitions(table)]


def _describe(table: str, days: list[str]) -> str:
    return f"{table}: {len(days)} partitions ({days[0]}..{days[-1]})" if days else f"{table}: no partitions"


def _raw_events(settings: Settings, timeout: float) -> str:
    table = settings.tables.raw_events
    days = _partitions(settings, table)
    if not days:
        raise _Outcome("fail", f"table '{table}' has no partitions")
    return _describe(table, days)


def _feature_tables(settings: Settings, timeout: float) -> str:
    tables = [settings.tables.user_features, settings.tables.realtime_features]
    found = {t: _partitions(settings, t) for t in tables}
    text = "; ".join(_describe(t, d) for t, d in found.items())
    if not all(found.values()):
        raise _Outcome("warn", text)  # the pipeline creates them: not a failure
    return text


# -- feast --------------------------------------------------------------------------------------------------

_ONLINE_FIX = {
    "sqlite": "run: modelsvc materialize (creates and fills the SQLite online store)",
    "redis": "check features.redis.host/port/password and that Redis is running",
}


def _feast_repo(settings: Settings, timeout: float) -> str:
    repo = settings.feature_repo_path()
    if not repo.is_dir():
        raise _Outcome("fail", f"Feast repo {repo.resolve()} does not exist")
    sources = sorted(p.name for p in repo.glob("*.py"))
    if not sources:
        raise _Outcome("fail", f"Feast repo {repo.resolve()} has no Python definitions")
    return f"{repo}: {', '.join(sources)}"


def _feast_registry(settings: Settings, timeout: float) -> str:
    path = settings.paths.resolve("feast") / "registry.db"
    if not path.is_file():
        raise _Outcome("warn", f"no registry at {path} yet")
    data = path.read_bytes()
    if data.startswith(b"SQLite format 3\x00"):
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return f"{path}: SQL registry ({len(tables)} tables)"
    try:
        counts = _top_level_fields(data)
    except ValueError as exc:
        raise _Outcome("fail", f"{path} is not a readable Feast registry ({exc})") from None
    # field numbers of feast.core.Registry (Registry.proto): 1 entities, 6 feature_views, 7 feature_services
    return (f"{path}: {counts.get(6, 0)} feature views, {counts.get(7, 0)} feature services, "
            f"{counts.get(1, 0)} entities")


def _top_level_fields(data: bytes) -> dict[int, int]:
    """Count the top-level fields of a protobuf message by number: enough to read Feast's file registry without
    importing feast (which takes longer than a check may)."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = varint(pos)
        elif wire == 1:
            pos += 8
        elif wire == 2:
            size, pos = varint(pos)
            pos += size
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        counts[number] = counts.get(number, 0) + 1
    return counts


def _online_store(settings: Settings, timeout: float) -> str:
    if settings.features.online_store == "redis":
        from modelsvc.errors import require

        require("redis", "redis")
        import redis

        cfg = settings.features.redis
        client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, ssl=cfg.ssl,
                             password=cfg.password.get_secret_value() if cfg.password else None,
                             socket_timeout=min(timeout, 5.0), socket_connect_timeout=min(timeout, 5.0))
        try:
            client.ping()
            info = client.info("server")
        except redis.RedisError as exc:
            raise _Outcome("fail", f"Redis at {cfg.host}:{cfg.port}: {_one_line(exc)}") from None
        finally:
            client.close()
        return f"redis {cfg.host}:{cfg.port}/{cfg.db}: PONG (server {info.get('redis_version', '?')})"
    path = settings.paths.resolve("feast") / "online_store.db"
    if not path.is_file():
        raise _Outcome("warn", f"no SQLite online store at {path} yet")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return f"sqlite {path}: {len(tables)} tables"


# -- mlflow -------------------------------------------------------------------------------------------------


def _local_db(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _mlflow_tracking(settings: Settings, timeout: float) -> str:
    uri = settings.tracking_uri()
    masked = mask_uri(uri)
    db = _local_db(uri)
    if db is not None:
        if db.is_file():
            return f"local store {db}"
        if not os.access(_existing_parent(db), os.W_OK):
            raise _Outcome("fail", f"local store {db} cannot be created (folder not writable)")
        raise _Outcome("warn", f"local store {db} does not exist yet (created by the first train)",
                       fix="nothing to do: modelsvc train creates it")
    parsed = urlparse(uri)
    if parsed.scheme in {"http", "https"}:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(_http_request(settings, uri, "/health"), timeout=min(timeout, 10.0)) as resp:
                body = resp.read(100).decode(errors="replace").strip()
        except urllib.error.HTTPError as exc:
            raise _Outcome("fail", f"MLflow server {masked}/health answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise _Outcome("fail", f"MLflow server {masked} is unreachable ({reason})") from None
        return f"server {masked}: /health {body or 'OK'}"
    raise _Outcome("skip", f"{masked}: no reachability probe for scheme '{parsed.scheme}'")


def _http_request(settings: Settings, uri: str, path: str) -> Any:
    """A request for ``path`` on the MLflow server at ``uri``. Credentials in the URI (``http://user:pw@host``,
    which MLflow's client accepts) become a Basic authorization header, as mlflow.username/password do: left in
    the URL, urllib would look up ``user:pw@host`` as a host name."""
    import base64
    import urllib.request

    parsed = urlparse(uri)
    user, password = parsed.username, parsed.password
    if settings.mlflow.username and settings.mlflow.password is not None:
        user, password = settings.mlflow.username, settings.mlflow.password.get_secret_value()
    host = parsed.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parsed.port}" if parsed.port else "")
    base = parsed._replace(netloc=netloc).geturl().rstrip("/")
    req = urllib.request.Request(base + path)
    if user is not None:
        token = f"{unquote(user)}:{unquote(password or '')}"
        req.add_header("Authorization", "Basic " + base64.b64encode(token.encode()).decode())
    return req


def _existing_parent(path: Path) -> Path:
    for p in [path.parent, *path.parent.parents]:
        if p.exists():
            return p
    return Path("/")


def _mlflow_registry(settings: Settings, timeout: float) -> str:
    uri = settings.mlflow.registry_uri or settings.tracking_uri()
    db = _local_db(uri)
    if db is not None and not db.is_file():
        raise _Outcome("skip", f"local store {db} does not exist yet")
    if urlparse(uri).scheme in {"http", "https"}:
        models = _search_models_rest(settings, uri, timeout)
    else:
        from modelsvc.tracking import mlflow_client

        models = [{"name": m.name, "aliases": dict(getattr(m, "aliases", None) or {})}
                  for m in mlflow_client(settings).search_registered_models(max_results=100)]
    name = settings.mlflow.registered_model
    ours = next((m for m in models if m["name"] == name), None)
    if ours is None:
        return f"{len(models)} registered models; '{name}' not registered yet"
    alias = settings.mlflow.production_alias
    version = ours["aliases"].get(alias)
    where = f"'{alias}' -> version {version}" if version else f"no '{alias}' alias yet"
    return f"{len(models)} registered models; '{name}': {where}"


def _search_models_rest(settings: Settings, uri: str, timeout: float) -> list[dict[str, Any]]:
    """The registry's search endpoint over plain HTTP: one bounded request, no MLflow client retries."""
    import json
    import urllib.error
    import urllib.request

    req = _http_request(settings, uri, "/api/2.0/mlflow/registered-models/search?max_results=100")
    try:
        with urllib.request.urlopen(req, timeout=min(timeout, 10.0)) as resp:
            body = json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise _Outcome("fail", f"registry search on {mask_uri(uri)} answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Outcome("fail", f"registry {mask_uri(uri)} is unreachable ({getattr(exc, 'reason', exc)})") from None
    return [{"name": m.get("name"), "aliases": {a["alias"]: a["version"] for a in m.get("aliases", [])}}
            for m in body.get("registered_models", [])]


# -- ray ----------------------------------------------------------------------------------------------------

_RAY_PROBE = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
res = ray.cluster_resources()
nodes = [n for n in ray.nodes() if n.get("Alive")]
print(json.dumps({"nodes": len(nodes), "cpus": res.get("CPU", 0), "gpus": res.get("GPU", 0),
                  "version": ray.__version__}))
ray.shutdown()
"""


def _ray(settings: Settings, timeout: float) -> str:
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        raise _Outcome("fail", "ray is not installed", fix="pip install 'ray[train,data]'")
    address = settings.ray_address()
    if not address:
        cpus = settings.ray.num_cpus or os.cpu_count() or 1
        from importlib.metadata import version

        return f"local Ray {version('ray')} (started on demand): {cpus} CPUs"
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    if address != "auto" and parsed.hostname and parsed.port:
        _tcp(parsed.hostname, parsed.port, timeout, "Ray cluster")
    return _probe_cluster(address, timeout)


def require_ray_cluster(settings: Settings) -> None:
    """The doctor's Ray check, before joining a cluster: ``ray.init`` on an unreachable address waits without end,
    so raise ServiceUnavailableError (69) when ``ray.address`` does not answer within ``ray.connect_timeout_s``."""
    try:
        _ray(settings, settings.ray.connect_timeout_s)
    except _Outcome as out:
        raise ServiceUnavailableError(f"{out.detail} (ray.connect_timeout_s={settings.ray.connect_timeout_s:g})",
                                      hint=out.fix or "start the cluster (ray start --head) or fix ray.address / "
                                                      "RAY_ADDRESS") from None


def _probe_cluster(address: str, timeout: float) -> str:
    # a child process: ray.init can block for long on a bad address, and must not join this process to a cluster
    import json
    import subprocess
    import sys

    try:
        out = subprocess.run([sys.executable, "-c", _RAY_PROBE, address], capture_output=True, text=True,
                             timeout=max(1.0, timeout - 1.0), stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise _Outcome("fail", f"Ray cluster at {address}: no answer within {timeout:g}s") from None
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        err = [line for line in out.stderr.strip().splitlines() if line.strip()]
        raise _Outcome("fail", f"Ray cluster at {address}: {err[-1][:200] if err else 'connection failed'}")
    info = json.loads(lines[-1])
    return (f"cluster {address}: {info['nodes']} nodes, {info['cpus']:g} CPUs, {info['gpus']:g} GPUs "
            f"(Ray {info['version']})")
