"""``HiveOfflineStore``: Feast's offline store interface in HiveQL, run by a HiveServer2 endpoint.

Feast's ``OfflineStore`` calls for retrieval, materialization, saved datasets, pushes and feature logging are
implemented (docs/hive.md has the table; not the monitoring calls): point-in-time retrieval with
an entity dataframe, an entity SQL query or none (a date range), the pulls of materialization, saved datasets
(``persist``: CREATE TABLE … AS on the server), pushes (``offline_write_batch``) and feature logging
(``write_logged_features``). List-typed columns come back as Arrow lists of the declared type.

Semantics follow Feast's reference stores: for each entity row, the latest feature row of each view whose
timestamp is at or before the entity timestamp and no older than the view's ttl (no lower bound when the ttl is
0/None), ties on the timestamp broken by the latest ``created_timestamp``; entity rows without a match get nulls;
``full_feature_names`` names columns ``view__feature``. The entity dataframe is uploaded to a temporary table in
the scratch database (``HiveWarehouse.insert_rows``: JSON lines in a SQL literal; a SQL entity query is
materialized by the server with CREATE TABLE … AS) and dropped afterwards, also when the query fails. Results
keep the entity rows' order.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from feast.data_source import DataSource
from feast.errors import SavedDatasetLocationAlreadyExists
from feast.feature_logging import LoggingConfig, LoggingSource
from feast.feature_view import DUMMY_ENTITY_ID, DUMMY_ENTITY_VAL, FeatureView
from feast.infra.offline_stores import offline_utils
from feast.infra.offline_stores.offline_store import OfflineStore, RetrievalJob, RetrievalMetadata
from feast.infra.registry.base_registry import BaseRegistry
from feast.on_demand_feature_view import OnDemandFeatureView
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from feast.types import from_feast_to_pyarrow_type
from feast.utils import compute_non_entity_date_range

from modelsvc.errors import DataError, ModelsvcError, UsageError
from modelsvc.features.hive.config import HiveSectionConfig, warehouse_for
from modelsvc.features.hive.source import HiveLoggingDestination, HiveSource, SavedDatasetHiveStorage
from modelsvc.features.hive.types import hive_list_arrow_type, restore_lists
from modelsvc.features.job import ArrowRetrievalJob
from modelsvc.warehouse.base import check_identifier
from modelsvc.warehouse.hive import HiveWarehouse, hive_type, sql_literal

ROW_ID = "modelsvc_row_id"
_TS = "modelsvc_ts"
_CREATED = "modelsvc_created"
_RN = "modelsvc_rn"


class HiveOfflineStoreConfig(HiveSectionConfig):
    """The ``offline_store`` section (fields: :class:`~modelsvc.features.hive.config.HiveSectionConfig`).

    Declared here because Feast looks the store class up in its config class's module."""


# -- SQL helpers -------------------------------------------------------------------------------------------------

def _q(name: str) -> str:
    """A checked, back-quoted identifier."""
    return f"`{check_identifier(name, what='column name')}`"


def _ts(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return sql_literal(value)


def _relation(source: HiveSource, database: str, *, start: datetime | None, end: datetime | None) -> str:
    """``(SELECT …) alias``-ready subquery over the source table: partitions pruned to [start, end] (with the
    source's slack), the tagged feature-timestamp column added."""
    extra = ""
    if source.feature_ts_column:
        extra = (f", CAST(CAST(s.{_q(source.timestamp_field)} AS DECIMAL(20,6)) * 1000000 AS BIGINT) "
                 f"AS {_q(source.feature_ts_column)}")
    where = []
    if source.date_partition_column:
        slack = timedelta(days=source.partition_slack_days)
        part = _q(source.date_partition_column)
        if start is not None:
            where.append(f"s.{part} >= '{(start.astimezone(timezone.utc) - slack).date().isoformat()}'")
        if end is not None:
            where.append(f"s.{part} <= '{(end.astimezone(timezone.utc) + slack).date().isoformat()}'")
    clause = (" WHERE " + " AND ".join(where)) if where else ""
    return f"(SELECT s.*{extra} FROM {source.qualified(database)} s{clause})"


def _aware(value: Any) -> datetime:
    ts = pd.Timestamp(value)
    return (ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")).to_pydatetime()


# -- the retrieval job --------------------------------------------------------------------------------------------

# uploads what the query needs, yields (sql, output column names), cleans up
QueryBuilder = Callable[[HiveWarehouse], AbstractContextManager[tuple[str, list[str]]]]
# the declared list columns of a result (name -> arrow list type), or how to look them up on the server
ListTypes = Mapping[str, pa.DataType] | Callable[[HiveWarehouse], Mapping[str, pa.DataType]]


class HiveRetrievalJob(ArrowRetrievalJob):
    """A HiveQL query (or a builder that uploads what it needs, yields the query and cleans up)."""

    def __init__(self, query: str | QueryBuilder, config: RepoConfig, *, full_feature_names: bool,
                 on_demand_feature_views: list[OnDemandFeatureView] | None = None,
                 metadata: RetrievalMetadata | None = None, column_names: list[str] | None = None,
                 sql_preview: str | None = None, list_types: ListTypes | None = None) -> None:
        super().__init__(full_feature_names=full_feature_names, on_demand_feature_views=on_demand_feature_views,
                         metadata=metadata)
        self._query = query
        self._config = config
        self._column_names = column_names
        self._sql_preview = sql_preview
        self._list_types = list_types

    def to_sql(self) -> str:
        """The HiveQL of this job (for an uploaded entity dataframe, with a placeholder table name)."""
        return self._query if isinstance(self._query, str) else (self._sql_preview or "")

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        names = self._column_names
        with warehouse_for(self._config.offline_store) as wh:
            if isinstance(self._query, str):
                table = wh.query(self._query)
            else:
                with self._query(wh) as (sql, names):
                    table = wh.query(sql)
            list_types = self._list_types(wh) if callable(self._list_types) else self._list_types
        if names is not None:
            # Hive lower-cases result names: restore the caller's spelling, drop the row id
            keep = [i for i, n in enumerate(table.column_names) if n.lower() != ROW_ID]
            table = table.select(keep).rename_columns(names)
        # HiveServer2 sends arrays as text: back to lists of the declared type
        return restore_lists(table, list_types or {})

    def persist(self, storage: SavedDatasetStorage, allow_overwrite: bool = False,
                timeout: int | None = None) -> None:
        """Write the result to the table of ``storage`` (a :class:`SavedDatasetHiveStorage`), on the server:
        ``CREATE TABLE … STORED AS PARQUET AS`` the job's query (column types kept, lists included)."""
        if not isinstance(storage, SavedDatasetHiveStorage):
            raise UsageError(f"the Hive offline store saves datasets to a SavedDatasetHiveStorage, "
                             f"got {type(storage).__name__}")
        with warehouse_for(self._config.offline_store) as wh:
            target = storage.qualified(wh.database)
            if _table_exists(wh, storage.database or wh.database, storage.table):
                if not allow_overwrite:
                    raise SavedDatasetLocationAlreadyExists(location=target)
                wh.execute(f"DROP TABLE {target}")
            if isinstance(self._query, str):
                wh.execute(f"CREATE TABLE {target} STORED AS PARQUET AS {self._query}")
                return
            with self._query(wh) as (sql, names):
                # the builder's query returns the row id last and Hive's lower-cased names: select the columns
                # under the caller's spelling, in the result's order
                inner = f"({sql}) r"
                cols = ", ".join(f"r.{_q(n)} AS {_q(n)}" for n in names)
                wh.execute(f"CREATE TABLE {target} STORED AS PARQUET AS SELECT {cols} FROM {inner}")


# -- point-in-time join ------------------------------------------------------------------------------------------

@dataclass
class _Entity:
    table: str  # scratch table name
    columns: list[str]  # original column names, in order
    timestamp_column: str
    start: datetime | None
    end: datetime | None


def _pit_sql(wh: HiveWarehouse, entity: _Entity, contexts: list[Any], sources: dict[str, HiveSource], *,
             full_feature_names: bool, filter_by_created_timestamp: bool) -> tuple[str, list[str]]:
    """The point-in-time join for ``contexts`` (Feast query contexts); returns (sql, output column names)."""
    e_ts = _q(entity.timestamp_column)
    ctes = [f"entity_rows AS (SELECT * FROM {wh.qualified(entity.table, scratch=True)})"]
    select = [f"e.{_q(c)}" for c in entity.columns]
    out_names = list(entity.columns)
    joins = []
    for i, ctx in enumerate(contexts):
        source = sources[ctx.name]
        ttl = int(ctx.ttl or 0)
        lower = entity.start - timedelta(seconds=ttl) if (entity.start is not None and ttl) else None
        relation = _relation(source, wh.database, start=lower, end=entity.end)
        ts, created = _q(ctx.timestamp_field), ctx.created_timestamp_column
        cols = []
        for sel in ctx.entity_selections:  # "source_column AS join_key"
            src, _, key = sel.partition(" AS ")
            cols.append(f"f.{_q(src.strip())} AS {_q(key.strip())}")
        cols.append(f"f.{ts} AS {_TS}")
        cols.append(f"f.{_q(created)} AS {_CREATED}" if created else f"CAST(NULL AS TIMESTAMP) AS {_CREATED}")
        feature_out = []
        for feature in ctx.features:
            name = ctx.field_mapping.get(feature, feature)
            out = f"{ctx.name}__{name}" if full_feature_names else name
            feature_out.append(out)
            cols.append(f"f.{_q(feature)} AS {_q(out)}")
        where = []
        if entity.end is not None:
            where.append(f"f.{ts} <= {_ts(entity.end)}")
        if lower is not None:
            where.append(f"f.{ts} >= {_ts(lower)}")
        src_cte = f"fv{i}_rows"
        ctes.append(f"{src_cte} AS (SELECT {', '.join(cols)} FROM {relation} f"
                    + (f" WHERE {' AND '.join(where)}" if where else "") + ")")
        on = [f"r.{_q(k)} = e.{_q(k)}" for k in ctx.entities] + [f"r.{_TS} <= e.{e_ts}"]
        if ttl:
            on.append(f"r.{_TS} >= e.{e_ts} - INTERVAL '{ttl}' SECOND")
        if filter_by_created_timestamp and created:
            on.append(f"r.{_CREATED} <= e.{e_ts}")
        feats = ", ".join(f"r.{_q(o)}" for o in feature_out)
        ctes.append(
            f"fv{i}_ranked AS (SELECT e.{ROW_ID}, {feats}, ROW_NUMBER() OVER (PARTITION BY e.{ROW_ID} "
            f"ORDER BY r.{_TS} DESC, r.{_CREATED} DESC) AS {_RN} "
            f"FROM entity_rows e JOIN {src_cte} r ON {' AND '.join(on)})")
        joins.append(f"LEFT JOIN (SELECT * FROM fv{i}_ranked WHERE {_RN} = 1) fv{i} ON fv{i}.{ROW_ID} = e.{ROW_ID}")
        select += [f"fv{i}.{_q(o)}" for o in feature_out]
        out_names += feature_out
    sql = ("WITH " + ",\n".join(ctes) + f"\nSELECT {', '.join(select)}, e.{ROW_ID}\nFROM entity_rows e\n"
           + "\n".join(joins) + f"\nORDER BY e.{ROW_ID}")
    return sql, out_names


def _upload_entity_df(wh: HiveWarehouse, entity_df: pd.DataFrame, name: str, timestamp_column: str) -> list[str]:
    """Upload the entity rows (plus their position as ``modelsvc_row_id``) to scratch table ``name``."""
    columns = [str(c) for c in entity_df.columns]
    for c in columns:
        check_identifier(c, what="entity dataframe column")
    if len({c.lower() for c in columns}) != len(columns) or ROW_ID in {c.lower() for c in columns}:
        raise DataError(f"entity dataframe columns must be distinct ignoring case and not '{ROW_ID}': {columns}")
    df = entity_df.reset_index(drop=True).copy()
    df[timestamp_column] = pd.to_datetime(df[timestamp_column], utc=True)
    table = pa.Table.from_pandas(df, preserve_index=False)
    table = table.append_column(ROW_ID, pa.array(range(len(df)), pa.int64()))
    table = pa.table({n: (c.cast(pa.string()) if pa.types.is_null(c.type) else c)
                      for n, c in zip(table.column_names, table.columns, strict=True)})
    wh.ensure_table(name, table.schema, scratch=True, partitioned=False)
    if table.num_rows:
        wh.insert_rows(name, table, scratch=True)
    return columns


class HiveOfflineStore(OfflineStore):
    """Feast offline store over HiveServer2 (see the module docstring for the semantics)."""

    supports_filter_by_created_timestamp = True

    @staticmethod
    def get_historical_features(config: RepoConfig, feature_views: list[FeatureView], feature_refs: list[str],
                                entity_df: pd.DataFrame | str | None, registry: BaseRegistry, project: str,
                                full_feature_names: bool = False, filter_by_created_timestamp: bool = False,
                                **kwargs: Any) -> RetrievalJob:
        store_config = config.offline_store
        sources: dict[str, HiveSource] = {}
        for fv in feature_views:
            if not isinstance(fv.batch_source, HiveSource):
                raise UsageError(f"feature view {fv.name}: its source is not a HiveSource")
            sources[fv.projection.name_to_use()] = fv.batch_source
        contexts_for = _contexts_factory(feature_refs, feature_views, registry, project)
        list_types = _declared_list_types(feature_views, feature_refs, full_feature_names)

        non_entity = None
        if entity_df is None:  # non-entity mode: every entity with a row in [start, end], as of end
            start_date, end_date = compute_non_entity_date_range(
                feature_views, start_date=kwargs.get("start_date"), end_date=kwargs.get("end_date"))
            non_entity = (_aware(start_date), _aware(end_date))
            ts_col = offline_utils.DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
            keys = list(dict.fromkeys(k for ctx in contexts_for(None, None) for k in ctx.entities))
            bounds: tuple[datetime | None, datetime | None] = (non_entity[1], non_entity[1])
        elif isinstance(entity_df, pd.DataFrame):
            ts_col = offline_utils.infer_event_timestamp_from_entity_df(dict(entity_df.dtypes))
            ts_values = pd.to_datetime(entity_df[ts_col], utc=True)
            bounds = (_aware(ts_values.min()), _aware(ts_values.max())) if len(entity_df) else (None, None)
            keys = [str(c) for c in entity_df.columns if c != ts_col]
        else:
            ts_col = offline_utils.DEFAULT_ENTITY_DF_EVENT_TIMESTAMP_COL
            bounds, keys = (None, None), []
        if isinstance(entity_df, pd.DataFrame):
            expected = offline_utils.get_expected_join_keys(project, feature_views, registry)
            offline_utils.assert_expected_columns_in_entity_df(dict(entity_df.dtypes), expected, ts_col)
            missing = sorted(k for k in expected if k not in entity_df.columns)
            if missing:
                raise DataError(f"entity dataframe lacks the join key(s) {', '.join(missing)}")

        @contextmanager
        def build(wh: HiveWarehouse) -> Iterator[tuple[str, list[str]]]:
            name = f"modelsvc_entity_{uuid.uuid4().hex[:16]}"
            try:
                if non_entity is not None:
                    union = _entity_union_sql(wh, contexts_for(*bounds), sources, keys, *non_entity)
                    order = ", ".join(f"q.{_q(k)}" for k in keys)
                    wh.execute(f"CREATE TABLE {wh.qualified(name, scratch=True)} STORED AS PARQUET AS "
                               f"SELECT q.*, {_ts(non_entity[1])} AS {_q(ts_col)}, "
                               f"ROW_NUMBER() OVER (ORDER BY {order}) AS {ROW_ID} FROM ({union}) q")
                    columns, (start, end) = [*keys, ts_col], bounds
                elif isinstance(entity_df, pd.DataFrame):
                    columns = _upload_entity_df(wh, entity_df, name, ts_col)
                    start, end = bounds
                else:
                    wh.execute(f"CREATE TABLE {wh.qualified(name, scratch=True)} STORED AS PARQUET AS "
                               f"SELECT q.*, ROW_NUMBER() OVER (ORDER BY q.{_q(ts_col)}) AS {ROW_ID} "
                               f"FROM ({entity_df}) q")
                    columns = [n for n, _ in wh.columns(name, scratch=True) if n != ROW_ID]
                    lo, hi = wh.scalar_rows(f"SELECT MIN({_q(ts_col)}), MAX({_q(ts_col)}) "
                                            f"FROM {wh.qualified(name, scratch=True)}")[0]
                    start, end = (_aware(lo), _aware(hi)) if lo is not None else (None, None)
                entity = _Entity(name, columns, ts_col, start, end)
                sql, out = _pit_sql(wh, entity, contexts_for(start, end), sources,
                                    full_feature_names=full_feature_names,
                                    filter_by_created_timestamp=filter_by_created_timestamp)
                yield sql, out
            finally:
                with suppress(ModelsvcError):
                    wh.drop_table(name, scratch=True)

        preview = None
        with suppress(Exception):
            preview_wh = HiveWarehouse(None, hive=store_config.hive_settings())
            placeholder = [*keys, ts_col] if non_entity is not None else [ts_col, *keys]
            entity = _Entity("modelsvc_entity_PLACEHOLDER", placeholder, ts_col, *bounds)
            preview, _ = _pit_sql(preview_wh, entity, contexts_for(*bounds), sources,
                                  full_feature_names=full_feature_names,
                                  filter_by_created_timestamp=filter_by_created_timestamp)
        return HiveRetrievalJob(
            build, config, full_feature_names=full_feature_names,
            on_demand_feature_views=OnDemandFeatureView.get_requested_odfvs(feature_refs, project, registry),
            metadata=RetrievalMetadata(features=feature_refs, keys=keys,
                                       min_event_timestamp=non_entity[0] if non_entity else bounds[0],
                                       max_event_timestamp=bounds[1]),
            sql_preview=preview, list_types=list_types,
        )

    @staticmethod
    def pull_latest_from_table_or_query(config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
                                        feature_name_columns: list[str], timestamp_field: str,
                                        created_timestamp_column: str | None, start_date: datetime,
                                        end_date: datetime) -> RetrievalJob:
        source = _hive_source(data_source)
        relation = _relation(source, config.offline_store.database, start=start_date, end=end_date)
        ts = _q(timestamp_field)
        order = [f"s.{ts} DESC"] + ([f"s.{_q(created_timestamp_column)} DESC"] if created_timestamp_column else [])
        partition = ("PARTITION BY " + ", ".join(f"s.{_q(k)}" for k in join_key_columns)) if join_key_columns else ""
        if feature_name_columns:
            cols = [*join_key_columns, *feature_name_columns, timestamp_field]
            if created_timestamp_column:
                cols.append(created_timestamp_column)
            inner = ", ".join(f"s.{_q(c)}" for c in cols)
            outer = ", ".join(f"t.{_q(c)}" for c in cols)
        else:  # Feast: no feature columns means every source column
            inner, outer = "s.*", "t.*"
        dummy = "" if join_key_columns else f", {sql_literal(DUMMY_ENTITY_VAL)} AS `{DUMMY_ENTITY_ID}`"
        sql = (f"SELECT {outer}{dummy} FROM (SELECT {inner}, ROW_NUMBER() OVER ({partition} ORDER BY "
               f"{', '.join(order)}) AS {_RN} FROM {relation} s WHERE s.{ts} >= {_ts(start_date)} "
               f"AND s.{ts} <= {_ts(end_date)}) t WHERE t.{_RN} = 1")
        if not feature_name_columns:
            return _DropColumnJob(sql, config, drop=_RN, list_types=_source_list_types(source))
        return HiveRetrievalJob(sql, config, full_feature_names=False, list_types=_source_list_types(source))

    @staticmethod
    def pull_all_from_table_or_query(config: RepoConfig, data_source: DataSource, join_key_columns: list[str],
                                     feature_name_columns: list[str], timestamp_field: str,
                                     created_timestamp_column: str | None = None, start_date: datetime | None = None,
                                     end_date: datetime | None = None) -> RetrievalJob:
        source = _hive_source(data_source)
        relation = _relation(source, config.offline_store.database, start=start_date, end=end_date)
        ts = _q(timestamp_field)
        if feature_name_columns:
            cols = [*join_key_columns, *feature_name_columns, timestamp_field]
            if created_timestamp_column:
                cols.append(created_timestamp_column)
            select = ", ".join(f"s.{_q(c)}" for c in cols)
        else:
            select = "s.*"
        where = []
        if start_date is not None:
            where.append(f"s.{ts} >= {_ts(start_date)}")
        if end_date is not None:
            where.append(f"s.{ts} <= {_ts(end_date)}")
        sql = f"SELECT {select} FROM {relation} s" + (f" WHERE {' AND '.join(where)}" if where else "")
        return HiveRetrievalJob(sql, config, full_feature_names=False, list_types=_source_list_types(source))

    @staticmethod
    def offline_write_batch(config: RepoConfig, feature_view: FeatureView, table: pa.Table,
                            progress: Callable[[int], Any] | None) -> None:
        """Append ``table`` (the source's columns, as Feast checks) to the feature view's source table; for a
        partitioned source, each row goes to the partition of its timestamp's UTC date."""
        source = _hive_source(feature_view.batch_source)
        pa_schema, column_names = offline_utils.get_pyarrow_schema_from_batch_source(config, source)
        if column_names != table.column_names:
            raise DataError(f"feature view {feature_view.name}: the rows have the columns {table.column_names}, "
                            f"its source {source.table} has {column_names} (in this order)")
        if table.num_rows == 0:
            return
        with warehouse_for(config.offline_store) as wh:
            target = source.qualified(wh.database)
            columns = _describe(wh, target)
            partition = source.date_partition_column
            if partition:
                days = pc.strftime(pc.cast(table[source.timestamp_field], pa.timestamp("us", tz="UTC")),
                                   format="%Y-%m-%d")
                table = table.append_column(partition, days)
            _append(wh, target, [(n, t) for n, t in columns if n != partition], table, partition=partition)
        if progress:
            progress(table.num_rows)

    @staticmethod
    def write_logged_features(config: RepoConfig, data: pa.Table | Path, source: LoggingSource,
                              logging_config: LoggingConfig, registry: BaseRegistry) -> None:
        """Append feature-server logs to the destination's table (created with the logging schema on first
        write)."""
        destination = logging_config.destination
        if not isinstance(destination, HiveLoggingDestination):
            raise UsageError(f"the Hive offline store logs to a HiveLoggingDestination, "
                             f"got {type(destination).__name__}")
        import pyarrow.parquet as pq

        table = pq.read_table(data) if isinstance(data, Path) else data
        schema = source.get_schema(registry)
        table = table.select(schema.names).cast(schema)
        with warehouse_for(config.offline_store) as wh:
            target = destination.qualified(wh.database)
            columns = [(f.name, _hive_column_type(f.type)) for f in schema]
            cols = ", ".join(f"{_q(n)} {t}" for n, t in columns)
            wh.execute(f"CREATE TABLE IF NOT EXISTS {target} ({cols}) STORED AS PARQUET")
            if table.num_rows:
                _append(wh, target, columns, table, partition=None)


class _DropColumnJob(HiveRetrievalJob):
    def __init__(self, sql: str, config: RepoConfig, *, drop: str, list_types: ListTypes | None = None) -> None:
        super().__init__(sql, config, full_feature_names=False, list_types=list_types)
        self._drop = drop

    def _to_arrow_internal(self, timeout: int | None = None) -> pa.Table:
        table = super()._to_arrow_internal(timeout)
        return table.drop_columns([n for n in table.column_names if n.lower() == self._drop])


def _hive_column_type(arrow: pa.DataType) -> str:
    """The Hive type of an arrow column, lists included (``list<int64>`` → ``ARRAY<BIGINT>``)."""
    if pa.types.is_list(arrow) or pa.types.is_large_list(arrow):
        return f"ARRAY<{hive_type(arrow.value_type)}>"
    return hive_type(arrow)


def _list_json(values: list[Any] | None, element: pa.DataType) -> str | None:
    """A list as JSON for ``from_json`` (timestamps as epoch microseconds)."""
    if values is None:
        return None
    if pa.types.is_timestamp(element):
        values = [None if v is None else _epoch_us(v) for v in values]
    return json.dumps(values, allow_nan=True)


def _epoch_us(value: Any) -> int:
    ts = pd.Timestamp(value)
    return int((ts.tz_localize("UTC") if ts.tzinfo is None else ts).value // 1000)


def _append(wh: HiveWarehouse, target: str, columns: list[tuple[str, str]], data: pa.Table, *,
            partition: str | None) -> None:
    """Append ``data`` to ``target`` (its data ``columns`` as (name, Hive type), in table order; ``partition``:
    the name of a string partition column, taken from ``data``): upload to a scratch table (list columns as
    JSON text), then one ``INSERT INTO … SELECT`` per partition, typed by the server. Lists are rebuilt with
    Spark SQL's ``from_json``."""
    by_name = {n.lower(): n for n in data.column_names}
    missing = [n for n, _ in columns if n.lower() not in by_name]
    if missing:
        raise DataError(f"{target}: the rows lack the column(s) {', '.join(missing)}")
    upload: dict[str, pa.Array] = {}
    select = []
    for i, (name, typ) in enumerate(columns):
        column = data[by_name[name.lower()]]
        key = f"c{i}"
        if typ.upper().startswith("ARRAY<"):
            element = column.type.value_type
            upload[key] = pa.array([_list_json(v, element) for v in column.to_pylist()], pa.string())
            if pa.types.is_timestamp(element):
                select.append(f"transform(from_json(u.{key}, 'array<bigint>'), x -> timestamp_micros(x))")
            else:
                select.append(f"from_json(u.{key}, '{typ.lower()}')")
        else:
            upload[key] = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
            select.append(f"CAST(u.{key} AS {typ})")
    if partition:
        upload["part"] = data[by_name[partition.lower()]].cast(pa.string()).combine_chunks()
    staged = pa.table({k: (v.cast(pa.string()) if pa.types.is_null(v.type) else v) for k, v in upload.items()})
    name = f"modelsvc_upload_{uuid.uuid4().hex[:16]}"
    try:
        wh.ensure_table(name, staged.schema, scratch=True, partitioned=False)
        wh.insert_rows(name, staged, scratch=True)
        source = f"FROM {wh.qualified(name, scratch=True)} u"
        if not partition:
            wh.execute(f"INSERT INTO TABLE {target} SELECT {', '.join(select)} {source}")
            return
        for day in sorted(set(staged["part"].to_pylist())):
            if day is None:
                raise DataError(f"{target}: a row has no {partition} value (its timestamp is null)")
            wh.execute(f"INSERT INTO TABLE {target} PARTITION ({_q(partition)}={sql_literal(day)}) "
                       f"SELECT {', '.join(select)} {source} WHERE u.part = {sql_literal(day)}")
    finally:
        with suppress(ModelsvcError):
            wh.drop_table(name, scratch=True)


def _describe(wh: HiveWarehouse, qualified: str) -> list[tuple[str, str]]:
    """(name, Hive type) of the columns of ``qualified`` (partition columns included once, last)."""
    out: list[tuple[str, str]] = []
    for row in wh.scalar_rows(f"DESCRIBE {qualified}"):
        name = (row[0] or "").strip()
        if not name or name.startswith("#"):
            break
        out.append((name, str(row[1]).strip().upper()))
    return out


def _table_exists(wh: HiveWarehouse, database: str, table: str) -> bool:
    rows = wh.scalar_rows(f"SHOW TABLES IN `{check_identifier(database, what='database name')}` LIKE '{table}'")
    return any(table.lower() in (str(c).lower() for c in row) for row in rows)


def _source_list_types(source: HiveSource) -> Callable[[HiveWarehouse], Mapping[str, pa.DataType]]:
    """Looks up the list columns of ``source`` (``DESCRIBE``) when its job runs."""
    def lookup(wh: HiveWarehouse) -> Mapping[str, pa.DataType]:
        types = {n: hive_list_arrow_type(t) for n, t in _describe(wh, source.qualified(wh.database))}
        return {n: t for n, t in types.items() if t is not None}
    return lookup


def _declared_list_types(feature_views: list[FeatureView], feature_refs: list[str],
                         full_feature_names: bool) -> dict[str, pa.DataType]:
    """Output column -> arrow type of the requested list-typed features, as the feature views declare them."""
    out: dict[str, pa.DataType] = {}
    for fv in feature_views:
        prefix = fv.projection.name_to_use()
        wanted = {ref.split(":", 1)[1] for ref in feature_refs if ref.split(":", 1)[0] == prefix}
        for field in fv.features:
            if field.name not in wanted:
                continue
            with suppress(ValueError, AssertionError):
                arrow = from_feast_to_pyarrow_type(field.dtype)
                if pa.types.is_list(arrow):
                    out[f"{prefix}__{field.name}" if full_feature_names else field.name] = arrow
    return out


def _entity_union_sql(wh: HiveWarehouse, contexts: list[Any], sources: dict[str, HiveSource], keys: list[str],
                      start: datetime, end: datetime) -> str:
    """The distinct entity keys with a feature row in [start, end], over every view (a key a view lacks: NULL)."""
    selects = []
    for ctx in contexts:
        source = sources[ctx.name]
        relation = _relation(source, wh.database, start=start, end=end)
        mapping = {}
        for sel in ctx.entity_selections:  # "source_column AS join_key"
            src, _, key = sel.partition(" AS ")
            mapping[key.strip()] = src.strip()
        cols = ", ".join(f"f.{_q(mapping[k])} AS {_q(k)}" if k in mapping else f"NULL AS {_q(k)}" for k in keys)
        ts = _q(ctx.timestamp_field)
        selects.append(f"SELECT DISTINCT {cols} FROM {relation} f "
                       f"WHERE f.{ts} >= {_ts(start)} AND f.{ts} <= {_ts(end)}")
    return "\nUNION\n".join(selects)


def _hive_source(data_source: DataSource | None) -> HiveSource:
    if not isinstance(data_source, HiveSource):
        raise UsageError(f"data source {getattr(data_source, 'name', None)} is not a HiveSource")
    return data_source


def _contexts_factory(feature_refs: list[str], feature_views: list[FeatureView], registry: BaseRegistry,
                      project: str) -> Callable[[datetime | None, datetime | None], list[Any]]:
    def contexts(start: datetime | None, end: datetime | None) -> list[Any]:
        now = datetime.now(timezone.utc)
        return offline_utils.get_feature_view_query_context(feature_refs, feature_views, registry, project,
                                                            (start or now, end or now))
    return contexts
