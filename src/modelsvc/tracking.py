"""MLflow, in one place: the client for the configured tracking server or local store, the names of the tags and
metrics modelsvc writes, run and registry look-ups, model loading and prediction, and report reads.

``evaluation`` and ``registry`` use MLflow through this module only (``training/`` logs from its own driver code);
the prediction service loads the production model with :func:`production_model_uri` and :func:`load_model`.
mlflow itself is imported lazily, inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from modelsvc.config import Settings, mask_uri
from modelsvc.errors import (
    DataError,
    ModelsvcError,
    NotFoundError,
    PermissionDeniedError,
    RetryableError,
    ServiceUnavailableError,
    UsageError,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

F = TypeVar("F", bound=Callable[..., Any])
_REACHED: set[tuple[str, int]] = set()  # servers this process already connected to
_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # mlflow.set_*_uri write these; mlflow_client restores
_URI_LOCK = threading.Lock()

# run tags written by evaluate (and read by promote)
TAG_VERDICT = "modelsvc.eval.verdict"
TAG_FINGERPRINT = "modelsvc.eval.dataset_fingerprint"
TAG_DATASET = "modelsvc.eval.dataset"
TAG_PRODUCTION_VERSION = "modelsvc.eval.production_version"
TAG_EVALUATED_AT = "modelsvc.eval.evaluated_at"
NO_PRODUCTION = "none"
REPORT_ARTIFACT = "evaluation/report.json"
METRIC_PREFIX = "eval_"  # evaluation metrics in the candidate run
# run tags written by train (docs/architecture.md "Models")
TAG_DATASET_NAME = "modelsvc.dataset.name"
TAG_DATASET_VERSION = "modelsvc.dataset.version"
TAG_DATASET_FINGERPRINT = "modelsvc.dataset.fingerprint"
MODEL_ARTIFACT = "model"  # artifact path of the pyfunc in a training run
PREDICTION_COLUMN = "p_click"
_GONE = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def mlflow_client(settings: Settings) -> Any:
    """Configure mlflow for ``settings`` and return an ``MlflowClient``.

    Local default: a SQLite store under ``<root>/mlflow`` with artifacts beside it. Credentials from settings
    are passed through MLflow's own environment variables, never logged. Artifact downloads draw no progress bars
    on stderr.
    """
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    uri = settings.tracking_uri()
    db = _local_store(uri)
    if db is not None:
        settings.paths.resolve("mlflow").mkdir(parents=True, exist_ok=True)
        create_local_store(db)
    check_reachable(settings)
    if settings.mlflow.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
    if settings.mlflow.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
    registry = settings.mlflow.registry_uri or uri
    set_mlflow_uris(uri, registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def set_mlflow_uris(tracking_uri: str, registry_uri: str) -> None:
    """Point mlflow's fluent API (``mlflow.register_model``, ``pyfunc.load_model``...) at these stores, leaving
    ``os.environ`` as it was.

    ``mlflow.set_tracking_uri`` / ``set_registry_uri`` also write ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``
    into the process environment, and :meth:`Settings.tracking_uri` reads ``MLFLOW_TRACKING_URI`` as the user's
    choice: any settings loaded later in the process (another project folder, a test's) would silently use the
    first one's store. The variables are put back under a lock (the serving reload thread calls this too)."""
    import mlflow

    with _URI_LOCK:
        saved = {k: os.environ.get(k) for k in _URI_ENV}
        try:
            mlflow.set_tracking_uri(tracking_uri)
            mlflow.set_registry_uri(registry_uri)
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def _local_store(tracking_uri: str) -> Path | None:
    """The file of a local SQLite tracking store (``sqlite:///<path>``), None for any other store."""
    return Path(tracking_uri[len("sqlite:///"):]) if tracking_uri.startswith("sqlite:///") else None


def create_local_store(db: Path) -> bool:
    """Create the local SQLite store ``db`` with MLflow's schema when it does not exist; True when this call did.

    MLflow creates a new store by running its ~60 Alembic migrations, and SQLite syncs the file to disk at every
    commit of them: 6.2 s of wall time for 1.1 s of CPU here (docs/performance.md, "Time to quality"). This runs
    the same migrations (MLflow's own ``_initialize_tables``) on a file beside ``db`` with syncing off, syncs it
    once, then links it into place: a crash leaves no half-migrated store, and of two processes creating it at
    once one wins and the other finds it whole. Where that MLflow function is missing (another MLflow version),
    MLflow creates the store itself at its first use, as before."""
    if db.exists():
        return False
    try:
        import sqlalchemy
        from mlflow.store.db.utils import _initialize_tables
    except ImportError:
        return False
    tmp = db.with_name(f".{db.name}.{os.getpid()}.{threading.get_ident()}.init")
    tmp.unlink(missing_ok=True)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp}", poolclass=sqlalchemy.pool.NullPool)

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_sync(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous=OFF")
        dbapi_conn.execute("PRAGMA journal_mode=MEMORY")

    try:
        _initialize_tables(engine)
        engine.dispose()
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        try:
            os.link(tmp, db)  # never replaces a store another process created meanwhile
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system
            if db.exists():
                return False
            os.replace(tmp, db)
        return True
    finally:
        engine.dispose()
        tmp.unlink(missing_ok=True)


def check_reachable(settings: Settings) -> None:
    """An http(s) tracking server must accept a TCP connection within ``mlflow.connect_timeout_s``: fail at once
    with exit 69 rather than after MLflow's retries with backoff (minutes). Checked once per server and process."""
    uri = settings.tracking_uri()
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if (parts.hostname, port) in _REACHED:
        return
    try:
        socket.create_connection((parts.hostname, port), timeout=settings.mlflow.connect_timeout_s).close()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ServiceUnavailableError(
            f"MLflow tracking server at {mask_uri(uri)} is unreachable ({reason})") from None
    _REACHED.add((parts.hostname, port))


def map_tracking_errors(fn: F) -> F:
    """Decorate a step taking ``settings`` first: an MLflow server that cannot be reached, or that refuses the
    credentials, becomes our error (exit 69 or 77, see :func:`tracking_error`) naming the masked URI, instead of
    MLflow's error, which quotes the full URI."""

    @functools.wraps(fn)
    def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(settings, *args, **kwargs)
        except ModelsvcError:
            raise
        except Exception as exc:  # mlflow raises many types for an unreachable server
            known = tracking_error(settings, exc)
            if known is not None:
                # from None: the chained MLflow error quotes the URI, and a user:password@ URI would show in -v
                raise known from None
            raise

    return wrapper  # type: ignore[return-value]


@map_tracking_errors
def ensure_experiment(settings: Settings) -> str:
    """The experiment id for ``settings.mlflow.experiment``, created when missing."""
    client = mlflow_client(settings)
    name = settings.mlflow.experiment
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=settings.artifact_location()))


def tracking_error(settings: Settings, exc: BaseException) -> ModelsvcError | None:
    """Our error for an MLflow failure we recognise (server unreachable, credentials refused), else None. The
    message names the masked URI only: MLflow's own text quotes the full URI, password included."""
    if not type(exc).__module__.startswith(("mlflow", "requests", "urllib3")):
        return None  # e.g. a storage error mentioning a refused connection is not the tracking server's
    text = type(exc).__name__ + str(exc)
    where = f"MLflow tracking server at {mask_uri(settings.tracking_uri())}"
    status = re.search(r"error code (401|403)\b", text)
    code = status.group(1) if status else {"UNAUTHENTICATED": "401", "PERMISSION_DENIED": "403"}.get(
        str(getattr(exc, "error_code", "")))
    if code:
        what = "refused the credentials" if code == "401" else "denied access"
        return PermissionDeniedError(
            f"{where} {what} (HTTP {code})",
            hint="set mlflow.username and mlflow.password (MODELSVC_MLFLOW__USERNAME / __PASSWORD) or "
                 "MLFLOW_TRACKING_TOKEN, and check the user's permissions on the experiment")
    if any(s in text for s in ("ConnectionError", "Connection refused", "Max retries", "MaxRetryError")):
        return ServiceUnavailableError(f"{where} is unreachable")
    return None


# -- runs ------------------------------------------------------------------------------------------------------

def error_code(exc: BaseException) -> str:
    """MLflow's error code of ``exc`` (e.g. ``RESOURCE_DOES_NOT_EXIST``), '' for other errors."""
    return str(getattr(exc, "error_code", ""))


def get_run(client: Any, run_id: str) -> Any:
    """The run ``run_id``: UsageError when empty, NotFoundError when it does not exist or is deleted."""
    from mlflow.exceptions import MlflowException

    if not run_id or not run_id.strip():
        raise UsageError("--run-id is empty")
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if error_code(exc) in _GONE:
            raise NotFoundError(f"MLflow run '{run_id}' not found") from None
        raise
    if run.info.lifecycle_stage == "deleted":
        raise NotFoundError(f"MLflow run '{run_id}' is deleted")
    return run


def run_metrics(client: Any, run_id: str | None, prefix: str = METRIC_PREFIX) -> dict[str, float]:
    """The run's latest metrics whose name starts with ``prefix`` ({} for no run, or one that cannot be read)."""
    from mlflow.exceptions import MlflowException

    if not run_id:
        return {}
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return {}
    return {k: float(v) for k, v in run.data.metrics.items() if k.startswith(prefix)}


def log_values(client: Any, run_id: str, *, metrics: dict[str, float] | None = None,
               tags: dict[str, str] | None = None, step: int = 0) -> None:
    """Metrics (at ``step``, timestamped now) and tags into run ``run_id`` in one batch."""
    import time

    from mlflow.entities import Metric, RunTag

    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in (metrics or {}).items()],
                     tags=[RunTag(k, v) for k, v in (tags or {}).items()])


def read_artifact_text(settings: Settings, run_id: str, path: str) -> str | None:
    """The text of artifact ``path`` of run ``run_id``, None when it is not there."""
    import tempfile

    import mlflow
    from mlflow.exceptions import MlflowException

    mlflow_client(settings)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tmp)
        except (MlflowException, OSError):
            return None
        with open(local, encoding="utf-8") as fh:
            return fh.read()


def read_report(settings: Settings, run_id: str) -> dict[str, Any] | None:
    """The evaluation report (JSON) stored in run ``run_id``, None when it was never evaluated."""
    import json

    text = read_artifact_text(settings, run_id, REPORT_ARTIFACT)
    return None if text is None else dict(json.loads(text))


# -- registry look-ups -----------------------------------------------------------------------------------------

def run_model_uri(run_id: str) -> str:
    """``runs:/<run_id>/model``: the pyfunc a training run logged."""
    return f"runs:/{run_id}/{MODEL_ARTIFACT}"


def version_model_uri(name: str, version: str | int) -> str:
    """``models:/<name>/<version>``: one registered version, whatever its aliases."""
    return f"models:/{name}/{version}"


def alias_model_uri(name: str, alias: str) -> str:
    """``models:/<name>@<alias>``: whatever version the alias points at when the model is loaded."""
    return f"models:/{name}@{alias}"


def production_model_uri(settings: Settings) -> str:
    """``models:/<registered_model>@<production_alias>`` for ``settings``."""
    return alias_model_uri(settings.mlflow.registered_model, settings.mlflow.production_alias)


def alias_version(client: Any, name: str, alias: str) -> Any | None:
    """The ModelVersion behind ``name@alias``, or None (no such registered model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if error_code(exc) in {*_GONE, "NOT_FOUND"}:
            return None
        raise


def production_version(settings: Settings, client: Any | None = None) -> Any | None:
    """The ModelVersion behind the production alias, or None (no registered model or no alias)."""
    client = client if client is not None else mlflow_client(settings)
    return alias_version(client, settings.mlflow.registered_model, settings.mlflow.production_alias)


def get_version(client: Any, name: str, version: str) -> Any:
    """ModelVersion ``version`` of ``name``; NotFoundError when it no longer exists."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if error_code(exc) in _GONE:
            raise NotFoundError(f"version {version} of registered model '{name}' no longer exists") from None
        raise


def find_version(client: Any, name: str, run_id: str) -> Any | None:
    """The version registered from ``run_id`` (the oldest when several), or None."""
    found = [v for v in client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
             if v.status != "FAILED_REGISTRATION"]
    return min(found, key=lambda v: int(v.version)) if found else None


def delete_alias(client: Any, name: str, alias: str) -> None:
    """Remove ``name@alias``; an alias (or model) that does not exist is no error."""
    from mlflow.exceptions import MlflowException

    try:
        client.delete_registered_model_alias(name, alias)
    except MlflowException as exc:
        if error_code(exc) not in _GONE:
            raise


def create_registered_model(client: Any, name: str, *, description: str,
                            tags: dict[str, str] | None = None) -> bool:
    """Create registered model ``name``: True when this call created it, False when it already existed."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, tags=tags, description=description)
    except MlflowException as exc:
        if error_code(exc) != "RESOURCE_ALREADY_EXISTS":
            raise
        return False
    return True


def registered_model_tags(client: Any, name: str) -> tuple[dict[str, str], int] | None:
    """(tags, creation time in ms) of registered model ``name``, None when it cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        rm = client.get_registered_model(name)
    except MlflowException:
        return None
    return dict(rm.tags), int(rm.creation_timestamp or 0)


def delete_registered_model(client: Any, name: str) -> None:
    """Delete registered model ``name``; MLflow errors (already gone) are ignored."""
    from mlflow.exceptions import MlflowException

    with contextlib.suppress(MlflowException):
        client.delete_registered_model(name)


def register_model(name: str, run_id: str) -> Any:
    """Register run ``run_id``'s model as a new version of ``name`` (quietly); RetryableError when not READY."""
    import logging

    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.utils.logging_utils import MLFLOW_LOGGING_STREAM

    # MLflow 3 warns that it resolves runs:/<id>/model to the logged model (models:/m-…), and prints "Registered
    # model … already exists" / "Created version …" to stderr: expected, not news (promote reports the version)
    fluent_log = logging.getLogger("mlflow.tracking._model_registry.fluent")
    level, enabled = fluent_log.level, MLFLOW_LOGGING_STREAM.enabled
    fluent_log.setLevel(logging.ERROR)
    MLFLOW_LOGGING_STREAM.enabled = False
    try:
        mv = mlflow.register_model(run_model_uri(run_id), name)
    except MlflowException as exc:
        raise NotFoundError(f"run {run_id} has no model at artifact path 'model': {str(exc).splitlines()[0]}") from None
    finally:
        fluent_log.setLevel(level)
        MLFLOW_LOGGING_STREAM.enabled = enabled
    if mv.status != "READY":
        raise RetryableError(f"version {mv.version} of '{name}' is still {mv.status}; run promote again")
    return mv


def list_artifact_files(uri: str, prefix: str = "") -> dict[str, int | None]:
    """Every file under artifact ``uri`` (recursively) with its size."""
    import mlflow

    files: dict[str, int | None] = {}
    for a in mlflow.artifacts.list_artifacts(artifact_uri=f"{uri}/{prefix}" if prefix else uri):
        if a.is_dir:
            files.update(list_artifact_files(uri, a.path))
        else:
            files[a.path] = a.file_size
    return files


def read_mlmodel(uri: str) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of model ``uri``; DataError when it cannot be read."""
    import tempfile

    import mlflow
    import yaml
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(artifact_uri=f"{uri}/MLmodel", dst_path=tmp)
            with open(path, encoding="utf-8") as fh:
                return dict(yaml.safe_load(fh) or {})
        except (MlflowException, OSError, yaml.YAMLError) as exc:
            raise DataError(f"model {uri} has no readable MLmodel: {str(exc).splitlines()[0]}") from None


# -- models ----------------------------------------------------------------------------------------------------

def load_model(settings: Settings, uri: str, *, quiet: bool = False) -> Any:
    """The pyfunc model at ``uri`` (``runs:/…``, ``models:/<name>/<version>``, ``models:/<name>@<alias>``);
    NotFoundError naming the URI when it cannot be loaded. ``quiet`` skips MLflow's dependency and Python-version
    checks (the serving process does them at its first load only: scanning the installed packages again costs CPU
    that a model swap under load takes from requests)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    client = mlflow_client(settings)
    try:
        return mlflow.pyfunc.load_model(_logged_model_uri(client, uri), suppress_warnings=quiet)
    except (MlflowException, OSError) as exc:
        raise NotFoundError(f"model {uri} cannot be loaded: {str(exc).splitlines()[0]}") from None


def _logged_model_uri(client: Any, uri: str) -> str:
    """``models:/<model id>`` for ``runs:/<run id>/<name>`` when the run logged a model of that name (MLflow 3's
    logged models), else ``uri`` as it is.

    MLflow resolves a ``runs:/`` URI by trying the run's own artifacts first and the logged model second. With a
    tracking server whose artifacts are on S3, that first try is a download of a missing key that the client retries
    with backoff: about 2 minutes before it falls back (the S3 production test). The same lookup MLflow does after
    it (the run's experiment, its logged models by name, the one from this run), done first."""
    from mlflow.exceptions import MlflowException

    run_id, _, name = uri.removeprefix("runs:/").partition("/")
    if not uri.startswith("runs:/") or not run_id or not name or "/" in name.strip("/"):
        return uri
    name = name.strip("/")
    try:
        experiment = client.get_run(run_id).info.experiment_id
        token = None
        while True:
            page = client.search_logged_models(experiment_ids=[experiment], filter_string=f"name = '{name}'",
                                               page_token=token)
            for model in page:
                if model.source_run_id == run_id:
                    return f"models:/{model.model_id}"
            token = page.token
            if not token:
                return uri
    except (MlflowException, AttributeError):  # no such run (MLflow says so below), or an MLflow without them
        return uri


def end_active_runs(status: str = "KILLED") -> None:
    """End every MLflow run this process still has open (after an interrupt); nothing when mlflow was never
    imported."""
    import sys

    if "mlflow" not in sys.modules:
        return
    import mlflow

    while mlflow.active_run() is not None:
        mlflow.end_run(status)


def predict(model: Any, uri: str, features: pd.DataFrame) -> np.ndarray:
    """``p_click`` of a loaded pyfunc for the rows of ``features``, as float64, checked: one value per row, all
    in [0, 1]. Failures name the model ``uri``."""
    import numpy as np

    try:
        out = model.predict(features)
    except Exception as exc:  # the model's own code: any failure names the model
        raise ModelsvcError(f"model {uri} failed to predict: {type(exc).__name__}: {exc}") from exc
    if hasattr(out, "columns"):
        if PREDICTION_COLUMN not in out.columns:
            raise DataError(f"model {uri} returned columns {list(out.columns)}, expected '{PREDICTION_COLUMN}'")
        out = out[PREDICTION_COLUMN]
    p = np.asarray(out, dtype=np.float64).ravel()
    if p.size != len(features):
        raise DataError(f"model {uri} returned {p.size} predictions for {len(features)} rows")
    bad = int(((p < 0) | (p > 1)).sum())
    if bad:
        raise DataError(f"model {uri} returned {bad} predictions outside [0, 1]")
    return p


# -- readiness checks (modelsvc doctor) ------------------------------------------------------------------------

TRACKING_FIX = "start the server or fix mlflow.tracking_uri / MLFLOW_TRACKING_URI"
REGISTRY_FIX = "check the registry URI and the MLflow credentials"
_BOUNDED_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
_bounded_lock = threading.Lock()
_bounded_users = 0
_bounded_saved: dict[str, str | None] = {}


@contextlib.contextmanager
def _bounded_requests(timeout: float) -> Iterator[None]:
    """MLflow's client with no retries and a request timeout within the check's, while checks run (MLflow reads
    both variables at each request; several checks may overlap, so the previous values come back after the last)."""
    global _bounded_users
    with _bounded_lock:
        if _bounded_users == 0:
            _bounded_saved.update({k: os.environ.get(k) for k in _BOUNDED_ENV})
            os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
            os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, int(min(timeout, 10.0))))
        _bounded_users += 1
    try:
        yield
    finally:
        with _bounded_lock:
            _bounded_users -= 1
            if _bounded_users == 0:
                for k, v in _bounded_saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v


def _local_db(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def _existing_parent(path: Path) -> Path:
    return next((p for p in [path.parent, *path.parent.parents] if p.exists()), Path("/"))


def _checked(settings: Settings, uri: str, what: str, call: Callable[[Any], Any], timeout: float) -> Any:
    """``call(client)`` through the bounded client; its failures as one failed-check line (no secret shown)."""
    from modelsvc.health import CheckOutcome, one_line

    with _bounded_requests(timeout):
        try:
            return call(mlflow_client(settings))
        except ModelsvcError:
            raise
        except Exception as exc:
            mapped = tracking_error(settings, exc)  # its message names the masked URI already, its hint the fix
            if mapped is not None:
                raise CheckOutcome("fail", mapped.message, fix=mapped.hint) from None
            raise CheckOutcome("fail", f"{what} {mask_uri(uri)}: {one_line(exc)}") from None


def check_tracking(settings: Settings, timeout: float) -> str:
    """The tracking store answers: a local SQLite store exists (or can be created), a server lists experiments."""
    from modelsvc.health import CheckOutcome

    uri = settings.tracking_uri()
    db = _local_db(uri)
    if db is not None:
        if db.is_file():
            return f"local store {db}"
        if not os.access(_existing_parent(db), os.W_OK):
            raise CheckOutcome("fail", f"local store {db} cannot be created (folder not writable)")
        raise CheckOutcome("warn", f"local store {db} does not exist yet (created by the first train)",
                           fix="nothing to do: modelsvc train creates it")
    scheme = urlsplit(uri).scheme
    if scheme not in {"http", "https", "databricks"}:
        raise CheckOutcome("skip", f"{mask_uri(uri)}: no reachability probe for scheme '{scheme}'")
    found = _checked(settings, uri, "MLflow server", lambda c: c.search_experiments(max_results=1), timeout)
    return f"server {mask_uri(uri)}: answers ({'experiments found' if found else 'no experiments yet'})"


def check_registry(settings: Settings, timeout: float) -> str:
    """The model registry answers; the registered model and its production alias, when they exist."""
    from modelsvc.health import CheckOutcome

    uri = settings.mlflow.registry_uri or settings.tracking_uri()
    db = _local_db(uri)
    if db is not None and not db.is_file():
        raise CheckOutcome("skip", f"local store {db} does not exist yet")
    models = _checked(settings, uri, "registry", lambda c: c.search_registered_models(max_results=100), timeout)
    name, alias = settings.mlflow.registered_model, settings.mlflow.production_alias
    ours = next((m for m in models if m.name == name), None)
    if ours is None:
        return f"{len(models)} registered models; '{name}' not registered yet"
    version = dict(getattr(ours, "aliases", None) or {}).get(alias)
    where = f"'{alias}' -> version {version}" if version else f"no '{alias}' alias yet"
    return f"{len(models)} registered models; '{name}': {where}"
