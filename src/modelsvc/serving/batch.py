"""``modelsvc score``: every impression of a day range, its point-in-time features (the join of
``build-dataset``) and the production model (or a run's), written as the ``predictions`` table."""

from __future__ import annotations

import time
from datetime import date

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.progress import NULL, Reporter
from modelsvc.serving import sources
from modelsvc.serving.model import LoadedModel
from modelsvc.timeutil import date_range
from modelsvc.warehouse.base import check_identifier

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
    seconds: float


def score(settings: Settings, *, start_date: str | date | None, end_date: str | date | None,
          run_id: str | None = None, reporter: Reporter = NULL) -> ScoreReport:
    """Score the impressions of [start_date, end_date] and replace those days of ``serving.predictions_table``
    (one atomic partition per day: running it again gives the same table)."""
    import numpy as np
    import pyarrow as pa

    t0 = time.perf_counter()
    days = date_range(start_date, end_date)
    table = check_identifier(settings.serving.predictions_table)
    with reporter.task("score", total=4) as task:
        model = LoadedModel.load(settings, sources.model_ref(settings, run_id))
        task.advance(1, step="model", version=model.version)
        df = sources.impressions_with_features(settings, days[0], days[-1])
        task.advance(1, step="point-in-time join", rows=len(df))
        frame = model.frame_from(df)
        p = np.concatenate([model.predict(frame.iloc[i:i + CHUNK_ROWS]) for i in range(0, len(frame), CHUNK_ROWS)]) \
            if len(frame) else np.zeros(0)
        task.advance(1, step="scored", rows=len(df))
        ts = df["event_timestamp"]
        out = pa.table({
            "event_id": pa.array(df["event_id"].astype(str).tolist(), pa.string()),
            "user_id": pa.array(df["user_id"].to_numpy("int64"), pa.int64()),
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "p_click": pa.array(p, pa.float64()),
            "model_version": pa.array([model.version] * len(df), pa.string()),
            "ds": pa.array(ts.dt.strftime("%Y-%m-%d").tolist(), pa.string()),
        })
        written = sources.write_partitions(settings, table, out, days)
        task.advance(1, step="written", rows=len(df))
    n_values = len(frame) * len(model.features)
    missing = int(frame.isna().to_numpy().sum()) if n_values else 0
    return ScoreReport(table=table, start_date=days[0], end_date=days[-1], model_uri=model.ref.uri,
                       model_version=model.version, rows=len(df), days=written,
                       mean_p_click=float(p.mean()) if len(p) else None,
                       missing_share=missing / n_values if n_values else 0.0,
                       seconds=round(time.perf_counter() - t0, 3))
