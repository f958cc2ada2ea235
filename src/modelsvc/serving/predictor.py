"""One prediction request, the same for ``modelsvc serve`` and ``modelsvc predict``: online features of the users,
the caller's overrides on top, the pyfunc on the rows, one result per item in order."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from modelsvc.errors import UsageError
from modelsvc.serving.model import _NUMERIC, LoadedModel
from modelsvc.serving.sources import OnlineFeatures


class InputError(UsageError):
    """A request item is wrong: ``field`` names it (``instances[2].total_orders_7d``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.detail = message


@dataclass(slots=True)
class Instance:
    """One request item: a user and optional feature values that replace the online ones (a plain dataclass:
    a request of 100 users builds 100 of them; the HTTP body is validated before, by ``parse_predict_body``)."""

    user_id: int
    overrides: dict[str, Any] = field(default_factory=dict)


class Prediction(BaseModel):
    user_id: int
    p_click: float
    model_version: str
    features_missing: list[str] = Field(description="model features with neither a fresh online value nor an "
                                        "override: the model imputes them")
    features: dict[str, Any] | None = Field(None, description="with explain: the values the model was given")


class PredictionBatch(BaseModel):
    """The result of ``predict``: one prediction per requested item, in order."""

    model_uri: str
    model_version: str
    at: datetime = Field(description="the instant features were judged fresh at")
    predictions: list[Prediction]
    online_read_ms: float
    total_ms: float
    missing_share: float = Field(description="share of the model's feature values that were missing")


def check_overrides(model: LoadedModel, instances: list[Instance]) -> None:
    """Overrides must name a model feature and have its type (number or text, null allowed)."""
    for i, inst in enumerate(instances):
        for name, value in inst.overrides.items():
            where = f"instances[{i}].{name}"
            if name not in model.types:
                raise InputError(where, f"not a feature of the model (features: {', '.join(model.features)})")
            if value is None:
                continue
            if model.types[name] in _NUMERIC:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                    raise InputError(where, f"expected a number or null, got {value!r}")
            elif not isinstance(value, str):
                raise InputError(where, f"expected a string or null, got {value!r}")


@dataclass
class Scored:
    """One request scored, before it becomes pydantic values (the service renders it to JSON directly)."""

    user_ids: list[int]
    p: Any  # float64 array, one per item
    rows: list[dict[str, Any]]  # per item: feature -> the value the model was given (None: missing)
    missing: list[list[str]]  # per item: the features with no value
    n_missing: int
    online_read_s: float

    @property
    def missing_share(self) -> float:
        total = sum(len(r) for r in self.rows)
        return self.n_missing / total if total else 0.0


def score_instances(model: LoadedModel, online: OnlineFeatures, instances: list[Instance], *,
                    at: datetime) -> Scored:
    """Score ``instances`` with ``model`` on the online features fresh at ``at``: the one path of ``serve`` and
    ``predict``."""
    check_overrides(model, instances)
    rows = online.read([inst.user_id for inst in instances], at=at)
    features = model.features
    merged: list[dict[str, Any]] = []
    missing: list[list[str]] = []
    n_missing = 0
    for inst, values in zip(instances, rows.values, strict=True):
        row = {f: values.get(f) for f in features}
        if inst.overrides:
            row.update(inst.overrides)
        gone = [f for f in features if row[f] is None]
        n_missing += len(gone)
        merged.append(row)
        missing.append(gone)
    p: Any = model.predict_rows(merged) if merged else []
    return Scored([inst.user_id for inst in instances], p, merged, missing, n_missing, rows.read_s)


def predict_instances(model: LoadedModel, online: OnlineFeatures, instances: list[Instance], *,
                      at: datetime | None = None, explain: bool = False) -> PredictionBatch:
    """Score ``instances`` with ``model`` on the online features fresh at ``at`` (default: now)."""
    t0 = time.perf_counter()
    at = at or datetime.now(timezone.utc)
    scored = score_instances(model, online, instances, at=at)
    version = model.version
    preds = [Prediction(user_id=u, p_click=float(scored.p[i]), model_version=version,
                        features_missing=scored.missing[i], features=scored.rows[i] if explain else None)
             for i, u in enumerate(scored.user_ids)]
    return PredictionBatch(model_uri=model.ref.uri, model_version=version, at=at, predictions=preds,
                           online_read_ms=scored.online_read_s * 1000, total_ms=(time.perf_counter() - t0) * 1000,
                           missing_share=scored.missing_share)
