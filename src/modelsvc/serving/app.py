"""The HTTP service of ``modelsvc serve`` (FastAPI, run by uvicorn).

Endpoints: ``POST /v1/predict``, ``GET /healthz`` (the process is up), ``GET /readyz`` (a model is loaded and the
online store answers; 503 with the reasons otherwise), ``GET /metrics`` (Prometheus).

A prediction is CPU work of a millisecond or two plus one online-store read with a short timeout, so the handler
runs it on the event loop, without a thread hop; more cores are used with more worker processes (``--workers``).
Every error is a JSON body ``{"error": {"status", "field", "message"}}``; none of them makes the process unhealthy.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, model_validator

from modelsvc.config import Settings
from modelsvc.errors import ModelsvcError, ServiceUnavailableError
from modelsvc.serving.metrics import ServiceMetrics
from modelsvc.serving.model import LoadedModel, ModelHolder
from modelsvc.serving.predictor import InputError, Instance, score_instances
from modelsvc.serving.sources import OnlineFeatures

log = logging.getLogger("modelsvc.serving")
ENDPOINTS = {"/v1/predict": "predict", "/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics"}


class InstanceIn(BaseModel):
    """``{"user_id": 42, "<feature>": <value>, ...}``: the other keys replace the online values."""

    model_config = ConfigDict(extra="allow")
    user_id: StrictInt


class PredictRequest(BaseModel):
    """Either ``user_ids`` or ``instances``."""

    model_config = ConfigDict(extra="forbid")
    user_ids: list[StrictInt] | None = None
    instances: list[InstanceIn] | None = None

    @model_validator(mode="after")
    def _one(self) -> PredictRequest:
        if (self.user_ids is None) == (self.instances is None):
            raise ValueError("give exactly one of 'user_ids' or 'instances'")
        return self

    def to_instances(self) -> list[Instance]:
        if self.user_ids is not None:
            return [Instance(user_id=u) for u in self.user_ids]
        return [Instance(user_id=i.user_id, overrides=dict(i.model_extra or {})) for i in self.instances or []]

    def size(self) -> int:
        return len(self.user_ids if self.user_ids is not None else self.instances or [])


def parse_predict_body(body: bytes) -> tuple[list[Instance], str]:
    """The items of a ``/v1/predict`` body and the field that held them (``user_ids`` or ``instances``).

    The common body, ``{"user_ids": [<int>, ...]}``, is read with orjson alone; any other goes through
    :class:`PredictRequest`, whose errors (and a body that is not JSON) are the 422 of FastAPI's validation."""
    import orjson
    from fastapi.exceptions import RequestValidationError
    from pydantic import ValidationError

    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body",), "msg": "JSON decode error",
                                       "ctx": {"error": str(exc)}}]) from None
    if type(data) is dict and len(data) == 1:
        ids = data.get("user_ids")
        if type(ids) is list and all(type(u) is int for u in ids):
            return [Instance(u) for u in ids], "user_ids"
    try:
        request = PredictRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    return request.to_instances(), "user_ids" if request.user_ids is not None else "instances"


class Service:
    """The state behind the app: the model holder, the online store, the metrics."""

    def __init__(self, settings: Settings, *, run_id: str | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.holder = ModelHolder(settings, run_id=run_id, on_swap=self.metrics.set_model)
        self.online: OnlineFeatures | None = None
        self.online_error: str | None = "online store not opened yet"
        self.clock = clock or (lambda: datetime.now(timezone.utc))

    def start(self) -> None:
        from modelsvc.training.model import set_threads

        # one intra-op thread: a request's tensors are tiny, and threads only contend; cores are used by workers
        set_threads(1)
        try:
            self._open_online()
        finally:
            self.holder.start()

    def stop(self) -> None:
        self.holder.stop()
        if self.online is not None:
            self.online.close()

    def _open_online(self) -> OnlineFeatures:
        if self.online is None:
            try:
                self.online = OnlineFeatures.open(self.settings)
                self.online_error = None
            except ModelsvcError as exc:
                self.online_error = exc.message
                raise ServiceUnavailableError(exc.message) from None
            except Exception as exc:  # Feast raises many types for a missing registry or store
                self.online_error = f"online store cannot be opened: {type(exc).__name__}: {str(exc)[:200]}"
                raise ServiceUnavailableError(self.online_error) from None
        return self.online

    def readiness(self) -> list[str]:
        """The reasons the service is not ready ([] when ready)."""
        reasons = []
        if self.holder.current is None:
            reasons.append(f"model: {self.holder.error}")
        try:
            self._open_online().ping()
            self.online_error = None
        except ServiceUnavailableError as exc:
            self.online_error = exc.message
            reasons.append(f"online store: {exc.message}")
        self.metrics.ready.set(0 if reasons else 1)
        return reasons

    def model(self) -> LoadedModel:
        model = self.holder.current
        if model is None:
            raise ServiceUnavailableError(f"no model loaded: {self.holder.error}")
        return model


def _error(status: int, message: str, field: str | None = None) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(status_code=status, content={"error": {"status": status, "field": field,
                                                               "message": message}})


def _field(loc: tuple[Any, ...]) -> str:
    parts = [p for p in loc if p != "body"]
    text = ""
    for p in parts:
        text += f"[{p}]" if isinstance(p, int) else (f".{p}" if text else str(p))
    return text or "body"


class _MetricsMiddleware:
    """Counts and times every HTTP request by endpoint (a plain ASGI wrapper: no per-request task)."""

    def __init__(self, app: Any, metrics: ServiceMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]

        async def send_status(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe_request(ENDPOINTS.get(scope["path"], "other"), status[0], time.perf_counter() - t0)


def create_app(  # noqa: C901 - the routes are closures over one holder and metrics; each route is short
    settings: Settings, *, run_id: str | None = None, clock: Callable[[], datetime] | None = None,
    service: Service | None = None,
) -> Any:
    """The FastAPI app over the production alias (or ``run_id``'s model). ``clock`` judges feature freshness
    (default: now)."""
    from fastapi import FastAPI, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    svc = service or Service(settings, run_id=run_id, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import anyio

        try:
            await anyio.to_thread.run_sync(svc.start)
        except ServiceUnavailableError as exc:
            log.warning("starting not ready: %s", exc.message)
        try:
            yield
        finally:
            svc.stop()

    app = FastAPI(title="modelsvc", version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json")
    app.state.service = svc
    app.add_middleware(_MetricsMiddleware, metrics=svc.metrics)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        err = exc.errors()[0]
        where = _field(tuple(err.get("loc", ())))
        if err.get("type") == "json_invalid":
            return _error(422, f"the body is not valid JSON ({err.get('ctx', {}).get('error', 'parse error')})",
                          "body")
        return _error(422, f"{where}: {err.get('msg')}", where)

    @app.exception_handler(InputError)
    async def _bad_item(request: Request, exc: InputError) -> Any:
        return _error(422, exc.message, exc.field)

    @app.exception_handler(ServiceUnavailableError)
    async def _unavailable(request: Request, exc: ServiceUnavailableError) -> Any:
        return _error(503, exc.message)

    @app.exception_handler(Exception)
    async def _crash(request: Request, exc: Exception) -> Any:
        log.exception("prediction failed")
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> Any:
        reasons = svc.readiness()
        model = svc.holder.current
        body = {"status": "ready" if not reasons else "not ready", "reasons": reasons,
                "model_version": model.version if model else None, "model_uri": model.ref.uri if model else None}
        return JSONResponse(status_code=200 if not reasons else 503, content=body)

    @app.get("/metrics")
    async def metrics() -> Any:
        data, content_type = svc.metrics.render()
        return Response(content=data, media_type=content_type)

    async def predict(request: Request, explain: bool = Query(False)) -> Any:
        import orjson

        instances, field = parse_predict_body(await request.body())
        limit = settings.serving.max_batch
        if len(instances) > limit:
            return _error(413, f"{field}: {len(instances)} users in one request, at most {limit} "
                               "(serving.max_batch)", field)
        if not instances:
            return _error(422, f"{field}: no users in the request", field)
        model = svc.model()
        online = svc._open_online()
        scored = score_instances(model, online, instances, at=svc.clock())
        n, version = len(instances), model.version
        svc.metrics.observe_features(n * len(model.features), scored.n_missing, scored.online_read_s, n)
        p = scored.p.tolist()
        if explain:
            items = [{"user_id": u, "p_click": p[i], "model_version": version,
                      "features_missing": scored.missing[i], "features": scored.rows[i]}
                     for i, u in enumerate(scored.user_ids)]
        else:
            items = [{"user_id": u, "p_click": p[i], "model_version": version, "features_missing": scored.missing[i]}
                     for i, u in enumerate(scored.user_ids)]
        return Response(content=orjson.dumps({"model_version": version, "predictions": items},
                                             option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")

    # the body is read by parse_predict_body (orjson), not by FastAPI's validation: the route takes the Request
    # (the class itself: fastapi is imported here, so the string annotation would not resolve) and documents the
    # body's schema itself
    predict.__annotations__["request"] = Request
    app.post("/v1/predict", openapi_extra={"requestBody": {"required": True, "content": {
        "application/json": {"schema": PredictRequest.model_json_schema()}}}})(predict)

    return app


def app_from_environment() -> Any:
    """uvicorn factory for ``--workers N`` (each worker process builds its app): settings from MODELSVC_CONFIG_DIR
    and MODELSVC_PROFILE, as ``modelsvc serve`` set them (SERVE_MODELSVC_RUN_ID: not MODELSVC_…, which names
    settings)."""
    import os

    from modelsvc.config import load_settings

    settings = load_settings(os.environ.get("MODELSVC_CONFIG_DIR") or "configs",
                             profile=os.environ.get("MODELSVC_PROFILE") or None)
    return create_app(settings, run_id=os.environ.get("SERVE_MODELSVC_RUN_ID") or None)
