"""Predictions from the production model: the HTTP service (``serve``), one-off predictions (``predict``) and
batch scoring (``score``), all on the features training saw.

- ``sources``: the one adapter to Feast (online reads, the point-in-time join) and MLflow (alias, loading);
- ``model``: the loaded pyfunc and the holder that follows the production alias (hot swap);
- ``predictor``: one request, shared by the service and the CLI;
- ``app``: the FastAPI service with health, readiness and Prometheus metrics;
- ``batch``: ``score`` into the ``predictions`` table.

fastapi, uvicorn and prometheus-client (the ``serve`` extra) are imported lazily.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from modelsvc.config import Settings
from modelsvc.errors import UsageError, require

if TYPE_CHECKING:
    from modelsvc.serving.batch import ScoreReport
    from modelsvc.serving.predictor import PredictionBatch


def predict(settings: Settings, *, user_ids: Sequence[int], run_id: str | None = None, at: datetime | None = None,
            explain: bool = False) -> PredictionBatch:
    """Predict once for ``user_ids`` on the service's path: the production model (or ``run_id``'s), the online
    features fresh at ``at`` (default: now)."""
    from modelsvc.serving.model import LoadedModel
    from modelsvc.serving.predictor import Instance, predict_instances
    from modelsvc.serving.sources import OnlineFeatures, model_ref

    if not user_ids:
        raise UsageError("give at least one --user-id")
    if len(user_ids) > settings.serving.max_batch:
        raise UsageError(f"{len(user_ids)} users, at most {settings.serving.max_batch} (serving.max_batch)")
    model = LoadedModel.load(settings, model_ref(settings, run_id))
    online = OnlineFeatures.open(settings)
    try:
        return predict_instances(model, online, [Instance(user_id=int(u)) for u in user_ids], at=at, explain=explain)
    finally:
        online.close()


def score(settings: Settings, **kwargs: object) -> ScoreReport:
    """See :func:`modelsvc.serving.batch.score`."""
    from modelsvc.serving.batch import score as batch_score

    return batch_score(settings, **kwargs)  # type: ignore[arg-type]


class JsonLogFormatter(logging.Formatter):
    """One JSON object per log line (``modelsvc serve --json``), for log collectors."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(), "level": record.levelname,
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def serve(settings: Settings, *, host: str | None = None, port: int | None = None, workers: int | None = None,
          run_id: str | None = None, json_logs: bool = False) -> None:
    """Run the HTTP service until interrupted (uvicorn; ``workers`` > 1: that many processes)."""
    import os

    require("fastapi", "serve")
    require("uvicorn", "serve")
    require("prometheus_client", "serve")
    require("orjson", "serve")
    import uvicorn

    host = host or settings.serving.host
    port = port or settings.serving.port
    workers = workers or settings.serving.workers
    log_config = {"version": 1, "disable_existing_loggers": False,
                  "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
                                 "json": {"()": "modelsvc.serving.JsonLogFormatter"}},
                  "handlers": {"stderr": {"class": "logging.StreamHandler",
                                          "formatter": "json" if json_logs else "plain",
                                          "stream": "ext://sys.stderr"}},
                  "loggers": {"modelsvc": {"handlers": ["stderr"], "level": "INFO"},
                              "uvicorn": {"handlers": ["stderr"], "level": "INFO"},
                              "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False}}}
    if workers == 1:
        from modelsvc.serving.app import create_app

        uvicorn.run(create_app(settings, run_id=run_id), host=host, port=port, log_config=log_config,
                    access_log=False)
        return
    # worker processes build their own app from the environment (MODELSVC_CONFIG_DIR / _PROFILE as loaded)
    import tempfile

    if settings.config_dir is not None:
        os.environ["MODELSVC_CONFIG_DIR"] = str(settings.config_dir)
    if settings.profile:
        os.environ["MODELSVC_PROFILE"] = settings.profile
    if run_id:
        os.environ["SERVE_MODELSVC_RUN_ID"] = run_id
    from modelsvc.serving.metrics import MULTIPROCESS_FLAG

    # one folder of metric files shared by the workers, before any import of prometheus_client or feast
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.environ["PROMETHEUS_MULTIPROCESS_DIR"] = tempfile.mkdtemp(
        prefix="modelsvc-metrics-")
    os.environ[MULTIPROCESS_FLAG] = "1"
    uvicorn.run("modelsvc.serving.app:app_from_environment", factory=True, host=host, port=port, workers=workers,
                log_config=log_config, access_log=False)


__all__ = ["predict", "score", "serve"]
