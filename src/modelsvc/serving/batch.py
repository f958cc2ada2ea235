"""``modelsvc score``: every impression of a day range, its point-in-time features (the join of
``build-dataset``) and the production model (or a run's), written as the ``predictions`` table.

Two ways, the same rows: in this process (the default), or, for a range of at least
``serving.score_ray_min_days`` days when a Ray cluster is configured, on Ray actors that each load the model
once and then take days one at a time: each reads its day's impressions and their point-in-time features itself
(as training's workers read their share of the dataset), scores them and sends back the day's predictions, which
this process writes as that day's partition (atomic, per day) as they come.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from functools import partial
from typing import TYPE_CHECKING

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.errors import DataError
from modelsvc.progress import NULL, Reporter
from modelsvc.serving import sources
from modelsvc.serving.model import LoadedModel
from modelsvc.timeutil import date_range
from modelsvc.warehouse.base import check_identifier

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

CHUNK_ROWS = 200_000  # rows scored per pyfunc call: bounds the memory of the preprocessing matrices


class ScoreReport(BaseModel):
    """The result of ``score``."""

    table: str
    start_date: date
    end_date: date
    model_uri: str
    model_version: str
    rows: int
    days: list[date] = Field(description="partitions replaced (every day of the range, empty ones too)")
    mean_p_click: float | None
    missing_share: float = Field(description="share of feature values missing (imputed by the model)")
    ray_actors: int = Field(0, description="Ray actors that scored the days; 0: scored in this process")
    seconds: float


@dataclass
class ScoredPart:
    """The predictions of some impressions (a day on Ray, the whole range locally) and their counts."""

    table: pa.Table  # the predictions table's columns, ds included
    rows: int
    p_sum: float
    missing: int  # feature values missing
    values: int  # feature values in all


def score(settings: Settings, *, start_date: str | date | None, end_date: str | date | None,
          run_id: str | None = None, reporter: Reporter = NULL) -> ScoreReport:
    """Score the impressions of [start_date, end_date] and replace those days of ``serving.predictions_table``
    (one atomic partition per day: running it again gives the same table). On Ray when the range has at least
    ``serving.score_ray_min_days`` days and a cluster is configured (see the module doc)."""
    t0 = time.perf_counter()
    days = date_range(start_date, end_date)
    table = check_identifier(settings.serving.predictions_table)
    ref = sources.model_ref(settings, run_id)
    actors = 0
    if on_ray(settings, days):
        written, rows, p_sum, missing, values, actors = _score_on_ray(settings, ref, table, days, reporter)
    else:
        written, rows, p_sum, missing, values = _score_here(settings, ref, table, days, reporter)
    return ScoreReport(table=table, start_date=days[0], end_date=days[-1], model_uri=ref.uri,
                       model_version=ref.version, rows=rows, days=written,
                       mean_p_click=p_sum / rows if rows else None,
                       missing_share=missing / values if values else 0.0, ray_actors=actors,
                       seconds=round(time.perf_counter() - t0, 3))


def on_ray(settings: Settings, days: list[date]) -> bool:
    """Whether ``score`` of ``days`` runs on Ray: a cluster is configured and the range is large."""
    return settings.ray_address() is not None and len(days) >= settings.serving.score_ray_min_days


def predictions(model: LoadedModel, df: pd.DataFrame) -> ScoredPart:
    """The predictions table's rows for impressions with their point-in-time features (``df``)."""
    import numpy as np
    import pyarrow as pa

    frame = model.frame_from(df)
    p = np.concatenate([model.predict(frame.iloc[i:i + CHUNK_ROWS]) for i in range(0, len(frame), CHUNK_ROWS)]) \
        if len(frame) else np.zeros(0)
    ts = df["event_timestamp"]
    out = pa.table({
        "event_id": pa.array(df["event_id"].astype(str).tolist(), pa.string()),
        "user_id": pa.array(df["user_id"].to_numpy("int64"), pa.int64()),
        "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        "p_click": pa.array(p, pa.float64()),
        "model_version": pa.array([model.version] * len(df), pa.string()),
        "ds": pa.array(ts.dt.strftime("%Y-%m-%d").tolist(), pa.string()),
    })
    values = len(frame) * len(model.features)
    missing = int(frame.isna().to_numpy().sum()) if values else 0
    return ScoredPart(out, len(df), float(p.sum()), missing, values)


def _score_here(settings: Settings, ref: sources.ModelRef, table: str, days: list[date],
                reporter: Reporter) -> tuple[list[date], int, float, int, int]:
    with reporter.task("score", total=4) as task:
        model = LoadedModel.load(settings, ref)
        task.advance(1, step="model", version=model.version)
        df = sources.impressions_with_features(settings, days[0], days[-1])
        task.advance(1, step="point-in-time join", rows=len(df))
        part = predictions(model, df)
        task.advance(1, step="scored", rows=part.rows)
        written = sources.write_partitions(settings, table, part.table, days)
        task.advance(1, step="written", rows=part.rows)
    return written, part.rows, part.p_sum, part.missing, part.values


# -- on Ray ------------------------------------------------------------------------------------------------------

def _load_on_worker(settings: Settings, ref: sources.ModelRef) -> tuple[Settings, LoadedModel]:
    """An actor's setup: the model, loaded once (quiet: the driver's environment checks are the user's)."""
    return settings, LoadedModel.load(settings, ref, quiet=True)


def _score_day(state: tuple[Settings, LoadedModel], day: date) -> ScoredPart:
    """An actor's work: one day's impressions, their point-in-time features, their predictions."""
    settings, model = state
    return predictions(model, sources.impressions_with_features(settings, day, day, empty_ok=True))


def _for_workers(settings: Settings) -> Settings:
    """``settings`` with what this process resolved from its environment pinned (a worker's environment is the
    Ray node's): the MLflow tracking URI."""
    mlflow = settings.mlflow.model_copy(update={"tracking_uri": settings.tracking_uri()})
    return settings.model_copy(update={"mlflow": mlflow})


def _score_on_ray(settings: Settings, ref: sources.ModelRef, table: str, days: list[date],
                  reporter: Reporter) -> tuple[list[date], int, float, int, int, int]:
    from modelsvc.training.ray_runtime import map_on_actors

    pinned = _for_workers(settings)
    written: list[date] = []
    empty: list[date] = []
    rows, p_sum, missing, values = 0, 0.0, 0, 0
    schema: pa.Schema | None = None
    started = [0]
    actors = min(len(days), settings.serving.score_ray_actors) if settings.serving.score_ray_actors else 0
    with reporter.task("score on Ray", total=len(days)) as task:
        for day, part in map_on_actors(pinned, partial(_load_on_worker, pinned, ref), _score_day, days,
                                       actors=actors, what="score", on_start=started.append):
            schema = part.table.schema
            if part.rows:  # a day with impressions: its partition now; empty days at the end (see below)
                written += sources.write_partitions(settings, table, part.table, [day])
            else:
                empty.append(day)
            rows, p_sum = rows + part.rows, p_sum + part.p_sum
            missing, values = missing + part.missing, values + part.values
            task.advance(1, day=day.isoformat(), rows=part.rows)
        if rows == 0:  # as in this process: nothing written for a range without impressions
            raise DataError(f"no impressions in table '{settings.tables.raw_events}' between {days[0]} and "
                            f"{days[-1]}")
        if empty and schema is not None:
            written += sources.write_partitions(settings, table, schema.empty_table(), sorted(empty))
    return sorted(written), rows, p_sum, missing, values, started[-1]
