"""Feast offline store for the local engine: Feast's DuckDB (ibis) store over the Hive-style Parquet tables.

``get_historical_features`` runs its own DuckDB plan (:func:`asof_sql`, :class:`AsofRetrievalJob`), with Feast's
semantics: per feature view, an ``ASOF LEFT JOIN`` on the join keys and ``entity ts >= feature ts`` picks the
latest feature row (of those with that event time, the latest ``created_timestamp``), and the features are
nulled where the joined row is older than the view's ttl (``feature ts + ttl < entity ts``). Every entity row comes
back once, in the entity dataframe's order. Feast's ibis plan (a per-row string key, a range join and a window
function) returned the same values 1.7-2.3x slower; it is still used for what this plan does not cover (an SQL
entity query, ``filter_by_created_timestamp``, substrait on-demand views, sources other than local files).

Otherwise only the reader differs from ``DuckDBOfflineStore``:

- a :class:`FileSource` may point at a table folder (``<warehouse>/<table>``, partitions ``ds=YYYY-MM-DD``);
  DuckDB reads every partition file below it;
- a source tagged ``modelsvc.feature_ts_column: NAME`` gets an extra int64 column ``NAME`` = its timestamp field
  in epoch microseconds, so
  a feature view can return the timestamp of the feature row it joined (``build-dataset`` checks it against
  the impression time: the leakage guard). Every engine's source honours this tag.

Use it in ``feature_store.yaml`` as ``offline_store: {type: modelsvc.features.local.LocalDuckDBOfflineStore}``
(the former path ``modelsvc.feast_local.LocalDuckDBOfflineStore`` still works).
This module imports feast and ibis: Feast imports it when the configuration names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import ibis
import numpy as np
import pandas as pd
import pyarrow
from feast.data_format import ParquetFormat
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from ibis.expr import datatypes as dt
from ibis.expr.types import Table
from pydantic import StrictStr

from modelsvc.errors import DataError
from modelsvc.features.job import ArrowRetrievalJob
from modelsvc.features.names import FEATURE_TS_TAG, LOCAL_OFFLINE_STORE
from modelsvc.warehouse.local import connect_duckdb, partition_glob


@ibis.udf.scalar.builtin
def epoch_us(value: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """DuckDB's epoch_us: microseconds since 1970-01-01 UTC."""


def read_source(data_source: DataSource, repo_path: str) -> Table:
    """Read a source like Feast's DuckDB store does, adding the tagged feature-timestamp column."""
    if isinstance(data_source, FileSource) and not data_source.path.endswith(".parquet"):
        # a table folder: read its ds=YYYY-MM-DD partitions (each one replaced atomically by the writer)
        table = ibis.read_parquet(partition_glob(data_source.path))
    else:
        table = feast_duckdb._read_data_source(data_source, repo_path)
    ts_column = (data_source.tags or {}).get(FEATURE_TS_TAG)
    if ts_column:
        # epoch microseconds (an Int64 feature): exact, and Feast writes it to the online store as is
        ts = table[data_source.timestamp_field].cast(dt.Timestamp(timezone="UTC"))
        table = table.mutate(**{ts_column: epoch_us(ts)})
    return table


# -- the point-in-time join: one DuckDB ASOF join per feature view ---------------------------------------------

_ENTITY = "__modelsvc_entity"  # the registered entity dataframe
_ROW = "__modelsvc_row"  # its row number: the output keeps the entity order
_ENTITY_TS = "__modelsvc_entity_ts"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def source_sql(data_source: DataSource | None) -> str | None:
    """The DuckDB table expression of what :func:`read_source` reads, for a local Parquet ``FileSource``
    (a table folder or a file); None for any other source."""
    if not isinstance(data_source, FileSource) or "://" in data_source.path:
        return None
    if not data_source.path.endswith(".parquet"):
        return f"read_parquet({_literal(partition_glob(data_source.path))})"
    if data_source.file_format is None or isinstance(data_source.file_format, ParquetFormat):
        return f"read_parquet({_literal(data_source.path)})"
    return None


@dataclass(frozen=True)
class ViewJoin:
    """One feature view's part of the join, as SQL over its source."""

    view: str
    source: str  # table expression
    timestamp: str  # SQL of the event timestamp column
    created: str | None  # SQL of the created timestamp column
    join_keys: dict[str, str]  # SQL of the feature-table key -> entity column
    features: dict[str, str]  # output column -> SQL over the source
    ttl: timedelta | None


def view_join(view: FeatureView, feature_refs: list[str], full_feature_names: bool) -> ViewJoin | None:
    """The join of ``view`` (names as in Feast's ibis plan); None when its source is not a local Parquet table."""
    data_source = view.batch_source
    source = source_sql(data_source)
    if source is None or data_source is None:
        return None
    # Feast renames source columns by field_mapping (source name -> feature view name)
    renamed = {new: old for old, new in (data_source.field_mapping or {}).items()}

    def column(name: str) -> str:
        return _ident(renamed.get(name, name))

    prefix = view.projection.name_to_use()
    names = [ref.split(":")[1] for ref in feature_refs if ref.startswith(f"{prefix}:")]
    base = view.projection.name_alias or view.name
    ts_column = (data_source.tags or {}).get(FEATURE_TS_TAG)
    timestamp = f"CAST({column(data_source.timestamp_field)} AS TIMESTAMPTZ)"
    features = {}
    for name in names:
        # the tagged column is read_source's: the row's timestamp in epoch microseconds
        expr = f"epoch_us(CAST({_ident(data_source.timestamp_field)} AS TIMESTAMPTZ))" if name == ts_column \
            else column(name)
        features[f"{base}__{name}" if full_feature_names else name] = expr
    join_key_map = view.projection.join_key_map or {e.name: e.name for e in view.entity_columns}
    created = data_source.created_timestamp_column
    return ViewJoin(view=view.name, source=source, timestamp=timestamp,
                    created=f"CAST({column(created)} AS TIMESTAMPTZ)" if created else None,
                    join_keys={column(k): v for k, v in join_key_map.items()}, features=features,
                    ttl=view.ttl or None)


def asof_sql(entity_columns: list[str], event_timestamp: str, joins: list[ViewJoin]) -> str:
    """The point-in-time join of the entity table ``_ENTITY`` (its columns plus ``_ROW``) with ``joins``.

    Where a view has a created timestamp, the ASOF join orders the feature rows by the pair (event timestamp,
    created timestamp) and the entity row's key is (its timestamp, +infinity): the row it joins is the last one
    at or before it, and among rows of that same event time the last created, which is Feast's tie-break
    without deduplicating the table first (a window over all feature rows). A null created timestamp loses the
    tie (Feast orders ``DESC NULLS LAST``); a null event timestamp, on either side, joins nothing."""
    entity_key = f"{_ENTITY_TS}_key"
    ctes = [f"e0 AS (SELECT *, CAST({_ident(event_timestamp)} AS TIMESTAMPTZ) AS {_ENTITY_TS} FROM {_ENTITY})",
            f"e1 AS (SELECT *, CASE WHEN {_ENTITY_TS} IS NOT NULL THEN "
            f"{{'t': {_ENTITY_TS}, 'c': 'infinity'::TIMESTAMPTZ}} END AS {entity_key} FROM e0)"]
    outputs = []
    last = "e1"
    for i, j in enumerate(joins):
        keys = [f"{sql} AS k{i}_{n}" for n, sql in enumerate(j.join_keys)]
        feats = [f"{sql} AS f{i}_{n}" for n, sql in enumerate(j.features.values())]
        if j.created is None:
            order, entity_order = f"ts{i}", _ENTITY_TS  # equal event times: any of the rows, as in Feast
            select = [*keys, f"{j.timestamp} AS ts{i}", *feats]
        else:
            order, entity_order = f"o{i}", entity_key
            pair = f"{{'t': {j.timestamp}, 'c': coalesce({j.created}, '-infinity'::TIMESTAMPTZ)}}"
            select = [*keys, f"{j.timestamp} AS ts{i}", f"CASE WHEN {j.timestamp} IS NOT NULL THEN {pair} END AS o{i}",
                      *feats]
        ctes.append(f"f{i} AS (SELECT {', '.join(select)} FROM {j.source})")
        on = [f"{last}.{_ident(entity)} = f{i}.k{i}_{n}" for n, entity in enumerate(j.join_keys.values())]
        on.append(f"{last}.{entity_order} >= f{i}.{order}")
        kept = ", ".join([f"f{i}.ts{i}", *(f"f{i}.f{i}_{n}" for n in range(len(j.features)))])
        ctes.append(f"j{i} AS (SELECT {last}.*, {kept} FROM {last} ASOF LEFT JOIN f{i} ON {' AND '.join(on)})")
        last = f"j{i}"
        if j.ttl:
            ttl_us = j.ttl // timedelta(microseconds=1)
            # Feast's ttl: joined while feature ts + ttl >= entity ts (exactly ttl old is still joined)
            fresh = f"ts{i} + to_microseconds({ttl_us}) >= {_ENTITY_TS}"
            outputs += [f"CASE WHEN {fresh} THEN f{i}_{n} END AS {_ident(name)}"
                        for n, name in enumerate(j.features)]
        else:
            outputs += [f"f{i}_{n} AS {_ident(name)}" for n, name in enumerate(j.features)]
    columns = ", ".join([*map(_ident, entity_columns), *outputs])
    return f"WITH {', '.join(ctes)}\nSELECT {columns} FROM {last} ORDER BY {_ROW}"


class AsofRetrievalJob(ArrowRetrievalJob):
    """Feast's retrieval job for :func:`asof_sql`: run on a fresh DuckDB connection when the result is asked."""

    def __init__(self, sql: str, entity: pd.DataFrame, *, on_demand_feature_views: list[OnDemandFeatureView],
                 full_feature_names: bool, metadata: RetrievalMetadata | None, repo_path: str) -> None:
        super().__init__(full_feature_names=full_feature_names, on_demand_feature_views=on_demand_feature_views,
                         metadata=metadata)
        self.sql = sql
        self._entity = entity
        self._repo_path = repo_path

    def _to_arrow_internal(self, timeout: int | None = None) -> pyarrow.Table:
        con = connect_duckdb()
        try:
            con.register(_ENTITY, self._entity)
            return con.sql(self.sql).to_arrow_table()
        finally:
            con.close()

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: int | None = None) -> None:
        feast_duckdb._write_data_source(ibis.memtable(self._to_arrow_internal(timeout)), storage.to_data_source(),
                                        self._repo_path, "overwrite", allow_overwrite)


def asof_historical_features(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
                             entity_df: pd.DataFrame, registry: BaseRegistry, project: str,
                             full_feature_names: bool) -> RetrievalJob | None:
    """The ASOF plan's job for ``get_historical_features``; None when it does not cover the request."""
    odfvs = OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry)
    joins = [view_join(view, feature_refs, full_feature_names) for view in feature_views]
    if any(j is None for j in joins) or any(o.mode == "substrait" for o in odfvs):
        return None
    view_joins = [j for j in joins if j is not None]

    event_timestamp = offline_utils.infer_event_timestamp_from_entity_df(dict(entity_df.dtypes.items()))
    offline_utils.assert_expected_columns_in_entity_df(
        dict(entity_df.dtypes.items()), {key for j in view_joins for key in j.join_keys.values()}, event_timestamp)
    entity_columns = [str(c) for c in entity_df.columns]
    for j in view_joins:
        for name in j.features:
            if name in entity_columns:
                raise DataError(f"entity column '{name}' has the name of a feature of view {j.view} "
                                "(rename it, or ask for full feature names)")
    timestamps = entity_df[event_timestamp].infer_objects()
    if pd.api.types.is_string_dtype(timestamps) or pd.api.types.is_object_dtype(timestamps):
        timestamps = pd.to_datetime(timestamps, utc=True)  # as Feast's ibis plan does
    entity = entity_df.assign(**{event_timestamp: timestamps, _ROW: np.arange(len(entity_df), dtype="int64")})
    metadata = RetrievalMetadata(features=feature_refs, keys=list(set(entity_columns) - {event_timestamp}),
                                 min_event_timestamp=timestamps.min().to_pydatetime(),
                                 max_event_timestamp=timestamps.max().to_pydatetime())
    return AsofRetrievalJob(asof_sql(entity_columns, event_timestamp, view_joins), entity,
                            on_demand_feature_views=odfvs, full_feature_names=full_feature_names,
                            metadata=metadata, repo_path=str(config.repo_path))


class LocalDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = LOCAL_OFFLINE_STORE


class LocalDuckDBOfflineStore(DuckDBOfflineStore):
    """``DuckDBOfflineStore`` with :func:`read_source` as its reader and the ASOF plan for historical features."""

    @staticmethod
    def _common(config: RepoConfig) -> dict[str, Any]:
        return {
            "data_source_reader": read_source,
            "data_source_writer": feast_duckdb._write_data_source,
            "staging_location": config.offline_store.staging_location,
            "staging_location_endpoint_override": config.offline_store.staging_location_endpoint_override,
        }

    @staticmethod
    def pull_latest_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None,
        start_date: datetime,
        end_date: datetime,
    ) -> RetrievalJob:
        return pull_latest_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **LocalDuckDBOfflineStore._common(config),
        )

    @staticmethod
    def get_historical_features(
        config: RepoConfig,
        feature_views: list[FeatureView],
        feature_refs: list[str],
        entity_df: pd.DataFrame | str,
        registry: BaseRegistry,
        project: str,
        full_feature_names: bool = False,
        filter_by_created_timestamp: bool = False,
    ) -> RetrievalJob:
        if isinstance(entity_df, pd.DataFrame) and not filter_by_created_timestamp:
            job = asof_historical_features(config, feature_views, feature_refs, entity_df, registry, project,
                                           full_feature_names)
            if job is not None:
                return job
        # Feast's plan: an entity query, the created-timestamp cutoff, other sources
        return get_historical_features_ibis(
            config=config,
            feature_views=feature_views,
            feature_refs=feature_refs,
            entity_df=entity_df,
            registry=registry,
            project=project,
            full_feature_names=full_feature_names,
            filter_by_created_timestamp=filter_by_created_timestamp,
            **LocalDuckDBOfflineStore._common(config),
        )

    @staticmethod
    def pull_all_from_table_or_query(
        config: RepoConfig,
        data_source: DataSource,
        join_key_columns: list[str],
        feature_name_columns: list[str],
        timestamp_field: str,
        created_timestamp_column: str | None = None,
        start_date: datetime | None = None,
        end_date: datetime | None = None,
    ) -> RetrievalJob:
        return pull_all_from_table_or_query_ibis(
            config=config,
            data_source=data_source,
            join_key_columns=join_key_columns,
            feature_name_columns=feature_name_columns,
            timestamp_field=timestamp_field,
            created_timestamp_column=created_timestamp_column,
            start_date=start_date,
            end_date=end_date,
            **LocalDuckDBOfflineStore._common(config),
        )

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pyarrow.Table,
                            progress: Callable[[int], Any] | None) -> None:
        # the warehouse tables are written by the ETL only
        raise NotImplementedError("modelsvc feature tables are written by `modelsvc etl`, not through Feast")
