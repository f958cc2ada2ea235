"""Feast offline store for the local engine: Feast's DuckDB (ibis) store over the Hive-style Parquet tables.

The point-in-time join, ttl and created-timestamp tie-break are Feast's own (``get_historical_features_ibis``);
only the reader differs from ``DuckDBOfflineStore``:

- a :class:`FileSource` may point at a table folder (``<warehouse>/<table>``, partitions ``ds=YYYY-MM-DD``);
  DuckDB reads every partition file below it;
- a source tagged ``modelsvc.feature_ts_column: NAME`` gets an extra int64 column ``NAME`` = its timestamp field
  in epoch microseconds, so
  a feature view can return the timestamp of the feature row it joined (``build-dataset`` checks it against
  the impression time: the leakage guard). Every engine's source honours this tag.

Use it in ``feature_store.yaml`` as ``offline_store: {type: modelsvc.feast_local.LocalDuckDBOfflineStore}``.
This module imports feast and ibis: import it only from the Feast adapter (``modelsvc.features``).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import ibis
import pandas as pd
import pyarrow
from feast.data_source import DataSource
from feast.feature_view import FeatureView
from feast.infra.offline_stores import duckdb as feast_duckdb
from feast.infra.offline_stores.duckdb import DuckDBOfflineStore, DuckDBOfflineStoreConfig
from feast.infra.offline_stores.file_source import FileSource
from feast.infra.offline_stores.ibis import (
    get_historical_features_ibis,
    pull_all_from_table_or_query_ibis,
    pull_latest_from_table_or_query_ibis,
)
from feast.infra.offline_stores.offline_store import RetrievalJob
from feast.infra.registry.base_registry import BaseRegistry
from feast.repo_config import RepoConfig
from ibis.expr import datatypes as dt
from ibis.expr.types import Table
from pydantic import StrictStr

from modelsvc.features import FEATURE_TS_TAG


@ibis.udf.scalar.builtin
def epoch_us(value: dt.Timestamp(timezone="UTC")) -> dt.int64:  # type: ignore[valid-type]
    """DuckDB's epoch_us: microseconds since 1970-01-01 UTC."""


def read_source(data_source: DataSource, repo_path: str) -> Table:
    """Read a source like Feast's DuckDB store does, adding the tagged feature-timestamp column."""
    if isinstance(data_source, FileSource) and not data_source.path.endswith(".parquet"):
        # a table folder: read its ds=YYYY-MM-DD partitions (not the writer's hidden .tmp-/.old- folders)
        table = ibis.read_parquet(data_source.path.rstrip("/") + "/ds=*/*.parquet")
    else:
        table = feast_duckdb._read_data_source(data_source, repo_path)
    ts_column = (data_source.tags or {}).get(FEATURE_TS_TAG)
    if ts_column:
        # epoch microseconds (an Int64 feature): exact, and Feast writes it to the online store as is
        ts = table[data_source.timestamp_field].cast(dt.Timestamp(timezone="UTC"))
        table = table.mutate(**{ts_column: epoch_us(ts)})
    return table


class LocalDuckDBOfflineStoreConfig(DuckDBOfflineStoreConfig):
    type: StrictStr = "modelsvc.feast_local.LocalDuckDBOfflineStore"


class LocalDuckDBOfflineStore(DuckDBOfflineStore):
    """``DuckDBOfflineStore`` with :func:`read_source` as its reader."""

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
