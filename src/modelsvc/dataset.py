"""Training datasets: point-in-time joined, split by time, versioned Parquet with a manifest.

``build_dataset`` (the ``build-dataset`` command) joins the impressions of a day range to the features of the
model's feature service through Feast (``modelsvc.features.historical_features``); this module also holds the
on-disk format every later step reads: ``load_dataset`` and ``DatasetManifest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from modelsvc.config import Settings, SplitSettings
from modelsvc.errors import ConfigError, DataError, NotFoundError
from modelsvc.progress import NULL, Reporter
from modelsvc.timeutil import date_range, day_start, parse_timestamp
from modelsvc.warehouse.base import check_identifier

if TYPE_CHECKING:
    import pandas as pd

FEATURES = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform", "current_page_views_10m"]
NUMERIC_FEATURES = ["total_orders_7d", "avg_purchase_value_30d", "current_page_views_10m"]
CATEGORICAL_FEATURES = ["last_seen_platform"]
SPLITS = ("train", "validation", "test")
ENTITY_COLUMNS = ["event_id", "user_id", "event_timestamp"]
IMPRESSION = "impression"
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


class SplitStats(BaseModel):
    rows: int
    label_rate: float | None
    start: datetime | None = None
    end: datetime | None = None


class DatasetManifest(BaseModel):
    """What a dataset version holds; written beside its data as manifest.json."""

    name: str
    version: str
    path: str = Field(description="folder of this version (data.parquet, manifest.json)")
    created_at: datetime
    start_date: str
    end_date: str
    entity: str = "user_id"
    label: str = "is_clicked"
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    feature_refs: list[str] = Field(default_factory=list)
    rows: int
    label_rate: float | None
    splits: dict[str, SplitStats]
    null_rate: dict[str, float]
    time_range: tuple[datetime, datetime] | None
    fingerprint: str
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.path) / DATA_FILE


def datasets_root(settings: Settings) -> Path:
    return settings.paths.resolve("datasets")


def list_versions(settings: Settings, name: str | None = None) -> list[str]:
    """Versions of a dataset, oldest first (version names sort by creation time)."""
    name = check_identifier(name or settings.dataset.name, what="dataset name")
    base = datasets_root(settings) / name
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def load_dataset(settings: Settings, name: str | None = None, version: str | None = None) -> DatasetManifest:
    """The manifest of ``name`` at ``version`` (default: the latest version)."""
    name = check_identifier(name or settings.dataset.name, what="dataset name")
    versions = list_versions(settings, name)
    if not versions:
        raise NotFoundError(
            f"dataset '{name}' not found under {datasets_root(settings)}",
            hint="build it with: modelsvc build-dataset --start-date D1 --end-date D2",
        )
    chosen = version or versions[-1]
    folder = datasets_root(settings) / name / chosen
    if chosen not in versions:
        raise NotFoundError(f"dataset '{name}' has no version '{chosen}' (latest: {versions[-1]})")
    manifest = DatasetManifest.model_validate_json((folder / MANIFEST_FILE).read_text())
    manifest.path = str(folder)
    check_labels(manifest)
    return manifest


def check_labels(manifest: DatasetManifest) -> None:
    """A DataError naming the version's file and the count when its label has values other than 0 and 1 (a
    dataset written by another tool, or by a modelsvc before the raw-event check of ``is_clicked``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        labels = pq.read_table(manifest.data_path, columns=[manifest.label]).column(0)
    except FileNotFoundError:
        raise NotFoundError(f"dataset file {manifest.data_path} is missing") from None
    except (KeyError, ValueError, OSError) as exc:  # pyarrow: no such column, or not Parquet
        raise DataError(f"{manifest.data_path}: cannot read the label column '{manifest.label}' "
                        f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
    # null, NaN or anything but 0/1 is refused
    numeric = pc.cast(labels, pa.float64()) if pa.types.is_integer(labels.type) or pa.types.is_floating(
        labels.type) or pa.types.is_boolean(labels.type) else pa.nulls(len(labels), pa.float64())
    bad = pc.fill_null(pc.invert(pc.is_in(numeric, value_set=pa.array([0.0, 1.0]))), True)
    n = pc.sum(bad).as_py() or 0
    if n:
        raise DataError(f"{manifest.data_path}: label '{manifest.label}' has {n} value(s) other than 0 and 1 "
                        f"(e.g. {labels.filter(bad)[0].as_py()})")


def read_dataset(manifest: DatasetManifest, *, split: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of a dataset version (optionally one split) as pandas."""
    import pyarrow.parquet as pq

    filters = [("split", "=", split)] if split else None
    try:
        table = pq.read_table(manifest.data_path, columns=columns, filters=filters)
    except FileNotFoundError:
        raise NotFoundError(f"dataset file {manifest.data_path} is missing") from None
    return table.to_pandas()


def write_dataset_version(settings: Settings, name: str, version: str, df: pd.DataFrame,
                          manifest: DatasetManifest) -> DatasetManifest:
    """Write data + manifest to a temporary folder, then rename it into place (never a half dataset)."""
    name = check_identifier(name, what="dataset name")
    base = datasets_root(settings) / name
    base.mkdir(parents=True, exist_ok=True)
    final = base / version
    if final.exists():
        raise DataError(f"dataset version {final} already exists")
    tmp = base / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        df.to_parquet(tmp / DATA_FILE, index=False, row_group_size=1_000_000)
        manifest.path = str(final)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


# -- build-dataset ---------------------------------------------------------------------------------------------

def build_dataset(settings: Settings, *, start_date: str | date, end_date: str | date, name: str | None = None,
                  reporter: Reporter = NULL) -> DatasetManifest:
    """Impressions of [start_date, end_date] (inclusive days) + their point-in-time features → a new version.

    Each impression gets, per feature view, the latest feature row with ``event_timestamp`` <= its own time and
    within the view's ttl (ties broken by ``created_timestamp``), through Feast ``get_historical_features`` of the
    feature service. Rows are split by time (``dataset.split``), never at random."""
    days = date_range(start_date, end_date)
    name = check_identifier(name or settings.dataset.name, what="dataset name")
    t0 = time.perf_counter()
    with reporter.task("build-dataset", total=4) as task:
        entity_df = read_impressions(settings, days[0], days[-1])
        task.advance(1, step="impressions", rows=len(entity_df))

        from modelsvc.features import historical_features

        joined = historical_features(settings, entity_df)
        task.advance(1, step="point-in-time join")
        df = finish_join(settings, joined.table, joined.timestamp_columns)
        task.advance(1, step="split")
        created = datetime.now(timezone.utc)
        version = created.strftime("%Y%m%dT%H%M%S%fZ")
        manifest = make_manifest(settings, df, name=name, version=version, created_at=created,
                                 start_date=days[0], end_date=days[-1], feature_refs=joined.feature_refs)
        manifest.extra["seconds"] = round(time.perf_counter() - t0, 3)
        manifest = write_dataset_version(settings, name, version, df, manifest)
        task.advance(1, step="written", rows=len(df))
    return manifest


def read_impressions(settings: Settings, start: date, end: date, *, empty_ok: bool = False) -> pd.DataFrame:
    """Entity rows: impressions in [start, end] with their label, from the raw-events table (none: DataError, or
    with ``empty_ok`` an empty frame of those columns)."""
    import pyarrow.compute as pc

    from modelsvc.warehouse import open_warehouse

    label = settings.dataset.label
    table_name = settings.tables.raw_events
    with open_warehouse(settings) as wh:
        table = wh.read_raw(start=start, end=end, columns=[*ENTITY_COLUMNS, "event_type", label, "ds"])
    if table.num_rows:
        table = table.filter(pc.equal(table.column("event_type"), IMPRESSION))
    if table.num_rows == 0:
        if not empty_ok:
            raise DataError(f"no impressions in table '{table_name}' between {start} and {end}")
    else:
        check_impressions(table, label=label, where=f"impressions in '{table_name}' between {start} and {end}")
    df = table.select([*ENTITY_COLUMNS, label]).to_pandas()
    df["event_timestamp"] = _utc(df["event_timestamp"])
    return df


def check_impressions(table: Any, *, label: str, where: str) -> None:
    """The impressions a dataset is made of, whatever the engine read them: every key and the label present, the
    label 0 or 1, each in the partition ``ds`` of its UTC day (the local engine's file check already refuses
    both, naming the file; this also holds for Hive), and each ``event_id`` once. ``where`` describes them in
    the DataError."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for column in (label, "user_id", "event_timestamp", "event_id"):
        if table.column(column).null_count:
            raise DataError(f"{table.column(column).null_count} {where} have no "
                            f"{'label ' if column == label else ''}'{column}'")
    labels = pc.cast(table.column(label), pa.float64())
    bad = pc.invert(pc.is_in(labels, value_set=pa.array([0.0, 1.0])))
    n = pc.sum(bad).as_py() or 0
    if n:
        first = table.filter(bad).slice(0, 1).to_pylist()[0]
        raise DataError(f"{n} {where} have a label '{label}' other than 0 and 1 (e.g. {first[label]} in "
                        f"ds={first.get('ds')})")
    if "ds" in table.column_names:  # an impression stored outside its UTC day would join by the wrong range
        ts = table.column("event_timestamp")
        utc = pc.cast(ts, pa.timestamp("us", tz="UTC")) if ts.type.tz is not None else pc.cast(ts, pa.timestamp("us"))
        off = pc.not_equal(pc.strftime(utc, format="%Y-%m-%d"), pc.cast(table.column("ds"), pa.string()))
        n = pc.sum(off).as_py() or 0
        if n:
            first = table.filter(off).slice(0, 1).to_pylist()[0]
            raise DataError(f"{n} {where} lie outside the UTC day of their partition (e.g. event "
                            f"{first['event_id']!r} at {first['event_timestamp']} in ds={first['ds']})")
    ids = table.column("event_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        counts = pc.value_counts(ids)
        repeated = counts.filter(pc.greater(counts.field("counts"), 1))
        raise DataError(f"{len(repeated)} event_id value(s) repeat among the {where} (event_id must be unique; "
                        f"e.g. {repeated[0]['values'].as_py()!r} {repeated[0]['counts'].as_py()} times)")


def _utc(col: pd.Series) -> pd.Series:
    import pandas as pd

    col = pd.to_datetime(col, utc=True)
    return col.dt.as_unit("us")


def finish_join(settings: Settings, table: Any, timestamp_columns: dict[str, list[str]]) -> pd.DataFrame:
    """Check the join (leakage, empty, all-null), drop the feature timestamps, sort, split, order the columns."""
    import numpy as np
    import pandas as pd
    import pyarrow as pa

    label = settings.dataset.label
    if table.num_rows == 0:
        raise DataError("the point-in-time join returned no rows")
    df = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    df["event_timestamp"] = _utc(df["event_timestamp"])
    impression_us = df["event_timestamp"].astype("int64").to_numpy() // 1000 \
        if df["event_timestamp"].dt.unit == "ns" else df["event_timestamp"].astype("int64").to_numpy()
    for ts_col in timestamp_columns:
        feature_us = df[ts_col].to_numpy(dtype="float64", na_value=np.nan)
        late = feature_us > impression_us  # NaN (no row joined) compares False
        if late.any():
            i = int(np.flatnonzero(late)[0])
            raise DataError(
                f"leakage: {int(late.sum())} rows joined a feature row later than the impression "
                f"({ts_col}; e.g. event {df['event_id'].iloc[i]} at {df['event_timestamp'].iloc[i]})")
    df = df.drop(columns=list(timestamp_columns))
    missing = [f for f in FEATURES if f not in df.columns]
    if missing:
        raise DataError(f"the point-in-time join lacks the features {', '.join(missing)}")
    if all(df[f].isna().all() for f in FEATURES):
        raise DataError(f"every feature is null in all {len(df)} rows: no feature row within ttl of any "
                        "impression (are the feature tables built for these days? run: modelsvc etl)")
    df = df.sort_values(["event_timestamp", "event_id"], kind="stable", ignore_index=True)
    df["split"] = assign_split(df["event_timestamp"], settings.dataset.split)
    df[label] = df[label].astype("int64")
    df["user_id"] = df["user_id"].astype("int64")
    return df[[*ENTITY_COLUMNS, label, "split", *FEATURES]]


def split_cutoffs(times: pd.Series, split: SplitSettings) -> tuple[datetime, datetime]:
    """(validation_start, test_start): explicit cut-offs, or fractions of the impressions' time range."""
    if split.validation_start is not None and split.test_start is not None:
        v = parse_timestamp(split.validation_start, option="dataset.split.validation_start")
        t = parse_timestamp(split.test_start, option="dataset.split.test_start")
        if t < v:
            raise ConfigError(f"dataset.split.test_start {t} is before dataset.split.validation_start {v}")
        return v, t
    lo, hi = times.min().to_pydatetime(), times.max().to_pydatetime()
    span = hi - lo
    test_start = hi - span * split.test_fraction
    validation_start = test_start - span * split.validation_fraction
    return validation_start, test_start


def assign_split(times: pd.Series, split: SplitSettings) -> pd.Series:
    """``train`` before validation_start <= ``validation`` < test_start <= ``test``: equal times share a split."""
    import numpy as np
    import pandas as pd

    validation_start, test_start = split_cutoffs(times, split)
    labels = np.where(times >= pd.Timestamp(test_start), "test",
                      np.where(times >= pd.Timestamp(validation_start), "validation", "train"))
    out = pd.Series(labels, index=times.index, name="split")
    counts = out.value_counts()
    if counts.get("train", 0) == 0:
        raise DataError(f"the time split leaves no training rows (validation starts {validation_start})")
    for name, frac in (("validation", split.validation_fraction), ("test", split.test_fraction)):
        explicit = split.test_start is not None
        if counts.get(name, 0) == 0 and (explicit or frac > 0):
            raise DataError(f"the time split leaves the '{name}' split empty "
                            f"(validation starts {validation_start}, test starts {test_start})")
    return out


def fingerprint(df: pd.DataFrame) -> str:
    """sha256 over the content in a canonical order: the same rows give the same fingerprint."""
    import pandas as pd

    h = hashlib.sha256()
    ordered = df.sort_values(["event_timestamp", "event_id"], kind="stable", ignore_index=True)
    for col in ordered.columns:
        h.update(f"{col}:{ordered[col].dtype}\n".encode())
        h.update(pd.util.hash_pandas_object(ordered[col], index=False).to_numpy().tobytes())
    return h.hexdigest()


def _rate(values: pd.Series) -> float | None:
    return float(values.mean()) if len(values) else None


def make_manifest(settings: Settings, df: pd.DataFrame, *, name: str, version: str, created_at: datetime,
                  start_date: date, end_date: date, feature_refs: list[str]) -> DatasetManifest:
    label = settings.dataset.label
    splits = {}
    for split in SPLITS:
        part = df[df["split"] == split]
        ts = part["event_timestamp"]
        splits[split] = SplitStats(rows=len(part), label_rate=_rate(part[label]),
                                   start=ts.min().to_pydatetime() if len(part) else None,
                                   end=ts.max().to_pydatetime() if len(part) else None)
    validation_start, test_start = split_cutoffs(df["event_timestamp"], settings.dataset.split)
    return DatasetManifest(
        name=name, version=version, path="", created_at=created_at,
        start_date=start_date.isoformat(), end_date=end_date.isoformat(),
        label=label, features=list(FEATURES), feature_refs=feature_refs,
        rows=len(df), label_rate=_rate(df[label]), splits=splits,
        null_rate={f: float(df[f].isna().mean()) for f in FEATURES},
        time_range=(df["event_timestamp"].min().to_pydatetime(), df["event_timestamp"].max().to_pydatetime()),
        fingerprint=fingerprint(df),
        extra={"feature_service": settings.features.feature_service,
               "split": {"validation_start": validation_start.isoformat(), "test_start": test_start.isoformat()},
               "engine": settings.warehouse.engine,
               "window": {"start": day_start(start_date).isoformat(),
                          "end": day_start(end_date + timedelta(days=1)).isoformat()}},
    )
