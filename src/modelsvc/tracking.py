"""The one place that points MLflow at the configured tracking server or local store."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

from modelsvc.config import Settings, mask_uri
from modelsvc.errors import ModelsvcError, ServiceUnavailableError

F = TypeVar("F", bound=Callable[..., Any])


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
    if settings.mlflow.username:
        os.environ["MLFLOW_TRACKING_USERNAME"] = settings.mlflow.username
    if settings.mlflow.password is not None:
        os.environ["MLFLOW_TRACKING_PASSWORD"] = settings.mlflow.password.get_secret_value()
    mlflow.set_tracking_uri(uri)
    registry = settings.mlflow.registry_uri or uri
    mlflow.set_registry_uri(registry)
    return MlflowClient(tracking_uri=uri, registry_uri=registry)


def ensure_experiment(settings: Settings) -> str:
    """The experiment id for ``settings.mlflow.experiment``, created when missing."""
    client = mlflow_client(settings)
    name = settings.mlflow.experiment
    try:
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return str(exp.experiment_id)
        return str(client.create_experiment(name, artifact_location=settings.artifact_location()))
    except Exception as exc:  # mlflow raises many types for an unreachable server
        if _is_connection_error(exc):
            # from None: the chained MLflow error quotes the URI, and a user:password@ URI would show in -v
            raise ServiceUnavailableError(
                f"MLflow tracking server at {mask_uri(settings.tracking_uri())} is unreachable"
            ) from None
        raise


def mlflow_unreachable_as_service_error(fn: F) -> F:
    """Decorate a step taking ``settings`` first: an MLflow server that cannot be reached becomes a
    ServiceUnavailableError (exit 69) naming the masked URI, instead of MLflow's error, which quotes the full URI."""

    @functools.wraps(fn)
    def wrapper(settings: Settings, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(settings, *args, **kwargs)
        except ModelsvcError:
            raise
        except Exception as exc:
            if _is_connection_error(exc):
                raise ServiceUnavailableError(
                    f"MLflow tracking server at {mask_uri(settings.tracking_uri())} is unreachable") from None
            raise

    return wrapper  # type: ignore[return-value]


def _is_connection_error(exc: BaseException) -> bool:
    text = type(exc).__name__ + str(exc)
    return any(s in text for s in ("ConnectionError", "Connection refused", "Max retries", "MaxRetryError"))
