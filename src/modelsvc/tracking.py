"""The one place that points MLflow at the configured tracking server or local store."""

from __future__ import annotations

import functools
import os
import re
import socket
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from modelsvc.config import Settings, mask_uri
from modelsvc.errors import ModelsvcError, PermissionDeniedError, ServiceUnavailableError

F = TypeVar("F", bound=Callable[..., Any])
_REACHED: set[tuple[str, int]] = set()  # servers this process already connected to


def mlflow_client(settings: Settings) -> Any:
    """Configure mlflow for ``settings`` and return an ``MlflowClient``.

    Local default: a SQLite store under ``<root>/mlflow`` with artifacts beside it. Credentials from settings
    are passed through MLflow's own environment variables, never logged.
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = settings.tracking_uri()
    if uri.startswith("sqlite:///"):
        settings.paths.resolve("mlflow").mkdir(parents=True, exist_ok=True)
    check_reachable(settings)
    if settings.mlflow.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
    if settings.mlflow.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
    mlflow.set_tracking_uri(uri)
    registry = settings.mlflow.registry_uri or uri
    mlflow.set_registry_uri(registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


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
