"""``HiveSource``: a Feast data source for a table on a HiveServer2 endpoint."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from feast.data_source import DataSource
from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto
from feast.repo_config import RepoConfig
from feast.value_type import ValueType

from modelsvc.features.hive.config import warehouse_for
from modelsvc.features.names import FEATURE_TS_TAG, HIVE_SOURCE
from modelsvc.warehouse.base import check_identifier

_HIVE_TO_FEAST = {
    "TINYINT": ValueType.INT32, "SMALLINT": ValueType.INT32, "INT": ValueType.INT32, "INTEGER": ValueType.INT32,
    "BIGINT": ValueType.INT64, "FLOAT": ValueType.FLOAT, "DOUBLE": ValueType.DOUBLE, "DECIMAL": ValueType.DOUBLE,
    "BOOLEAN": ValueType.BOOL, "STRING": ValueType.STRING, "VARCHAR": ValueType.STRING, "CHAR": ValueType.STRING,
    "BINARY": ValueType.BYTES, "TIMESTAMP": ValueType.UNIX_TIMESTAMP, "DATE": ValueType.UNIX_TIMESTAMP,
}


def hive_to_feast_value_type(hive_type: str) -> ValueType:
    """A Hive column type (``BIGINT``, ``decimal(10,2)``, ``array<string>`` …) → Feast ValueType."""
    base = hive_type.strip().upper().split("(")[0].split("<")[0]
    if base == "ARRAY":
        inner = hive_to_feast_value_type(hive_type.strip()[6:-1])
        return ValueType[f"{inner.name}_LIST"] if f"{inner.name}_LIST" in ValueType.__members__ else ValueType.UNKNOWN
    return _HIVE_TO_FEAST.get(base, ValueType.UNKNOWN)


class HiveSource(DataSource):
    """A table on HiveServer2, read by :class:`~modelsvc.features.hive.HiveOfflineStore`.

    ``table`` (and ``database``, default: the store's ``database``) name it; ``timestamp_field`` and
    ``created_timestamp_column`` follow Feast. ``date_partition_column`` (default ``ds``, a ``YYYY-MM-DD``
    string) prunes partitions: a row with timestamp ``t`` must live in a partition within
    ``partition_slack_days`` of ``t``'s UTC date (modelsvc's feature tables: one day).
    """

    def __init__(self, *, table: str, name: str | None = None, database: str | None = None,
                 timestamp_field: str | None = "", created_timestamp_column: str | None = "",
                 field_mapping: dict[str, str] | None = None, date_partition_column: str | None = "ds",
                 partition_slack_days: int = 1, description: str | None = "", tags: dict[str, str] | None = None,
                 owner: str | None = "") -> None:
        self.table = check_identifier(table)
        self.database = check_identifier(database, what="database name") if database else None
        for col in (timestamp_field, created_timestamp_column, date_partition_column):
            if col:
                check_identifier(col, what="column name")
        if partition_slack_days < 0:
            raise ValueError("partition_slack_days must be >= 0")
        self.partition_slack_days = int(partition_slack_days)
        super().__init__(name=name or table, timestamp_field=timestamp_field,
                         created_timestamp_column=created_timestamp_column, field_mapping=field_mapping,
                         description=description, tags=tags, owner=owner,
                         date_partition_column=date_partition_column)

    def __hash__(self) -> int:
        return super().__hash__()

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HiveSource):
            return False
        return (super().__eq__(other) and self.table == other.table and self.database == other.database
                and self.partition_slack_days == other.partition_slack_days)

    def source_type(self) -> DataSourceProto.SourceType.ValueType:
        return DataSourceProto.CUSTOM_SOURCE

    @staticmethod
    def from_proto(data_source: DataSourceProto) -> HiveSource:
        options = json.loads(data_source.custom_options.configuration or b"{}")
        return HiveSource(
            name=data_source.name,
            table=options["table"],
            database=options.get("database"),
            partition_slack_days=int(options.get("partition_slack_days", 1)),
            timestamp_field=data_source.timestamp_field,
            created_timestamp_column=data_source.created_timestamp_column,
            date_partition_column=data_source.date_partition_column,
            field_mapping=dict(data_source.field_mapping),
            description=data_source.description,
            tags=dict(data_source.tags),
            owner=data_source.owner,
        )

    def _to_proto_impl(self) -> DataSourceProto:
        options = {"table": self.table, "database": self.database,
                   "partition_slack_days": self.partition_slack_days}
        proto = DataSourceProto(
            name=self.name,
            type=DataSourceProto.CUSTOM_SOURCE,
            data_source_class_type=HIVE_SOURCE,
            field_mapping=self.field_mapping,
            custom_options=DataSourceProto.CustomSourceOptions(configuration=json.dumps(options).encode()),
            description=self.description,
            tags=self.tags,
            owner=self.owner,
        )
        proto.timestamp_field = self.timestamp_field
        proto.created_timestamp_column = self.created_timestamp_column
        proto.date_partition_column = self.date_partition_column
        return proto

    # -- what the store needs ------------------------------------------------------------------------------------
    def qualified(self, default_database: str) -> str:
        return f"`{self.database or check_identifier(default_database, what='database name')}`.`{self.table}`"

    def get_table_query_string(self) -> str:
        return f"`{self.database}`.`{self.table}`" if self.database else f"`{self.table}`"

    @property
    def feature_ts_column(self) -> str | None:
        col = (self.tags or {}).get(FEATURE_TS_TAG)
        return check_identifier(col, what="column name") if col else None

    def validate(self, config: RepoConfig) -> None:
        self.get_table_column_names_and_types(config)

    @staticmethod
    def source_datatype_to_feast_value_type() -> Callable[[str], ValueType]:
        return hive_to_feast_value_type

    def get_table_column_names_and_types(self, config: RepoConfig) -> Iterable[tuple[str, str]]:
        """(name, Hive type) of the table's columns (``DESCRIBE``), plus the tagged feature-timestamp column."""
        store: Any = config.offline_store
        with warehouse_for(store, database=self.database) as wh:
            cols = wh.columns(self.table)
        out = [*cols, (self.date_partition_column, "STRING")] if self.date_partition_column else list(cols)
        if self.feature_ts_column:
            out.append((self.feature_ts_column, "BIGINT"))
        return out
