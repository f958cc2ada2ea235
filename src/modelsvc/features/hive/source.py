"""``HiveSource``: a Feast data source for a table on a HiveServer2 endpoint."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from feast.data_source import DataSource
from feast.feature_logging import LoggingDestination
from feast.protos.feast.core.DataSource_pb2 import DataSource as DataSourceProto
from feast.protos.feast.core.FeatureService_pb2 import LoggingConfig as LoggingConfigProto
from feast.protos.feast.core.SavedDataset_pb2 import SavedDatasetStorage as SavedDatasetStorageProto
from feast.repo_config import RepoConfig
from feast.saved_dataset import SavedDatasetStorage
from feast.value_type import ValueType

from modelsvc.features.hive.config import warehouse_for
from modelsvc.features.hive.types import hive_to_feast_value_type
from modelsvc.features.names import FEATURE_TS_TAG, HIVE_SOURCE
from modelsvc.warehouse.base import check_identifier


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
        """(name, Hive type) of the table's data columns (``DESCRIBE``; not the partition column), plus the tagged
        feature-timestamp column."""
        store: Any = config.offline_store
        with warehouse_for(store, database=self.database) as wh:
            cols = wh.columns(self.table)
        # not the partition column: a FeatureView without a schema must not take it for a feature
        out = [c for c in cols if c[0] != self.date_partition_column]
        if self.feature_ts_column:
            out.append((self.feature_ts_column, "BIGINT"))
        return out


def _table_options(table: str, database: str | None) -> DataSourceProto.CustomSourceOptions:
    return DataSourceProto.CustomSourceOptions(
        configuration=json.dumps({"table": table, "database": database}).encode())


def _qualified(table: str, database: str | None, default_database: str) -> str:
    return f"`{database or check_identifier(default_database, what='database name')}`.`{table}`"


class SavedDatasetHiveStorage(SavedDatasetStorage):
    """Where ``store.create_saved_dataset(…, storage=SavedDatasetHiveStorage(table=…))`` writes on HiveServer2: an
    unpartitioned Parquet table (``database`` default: the store's), created from the retrieval job's query."""

    _proto_attr_name = "custom_storage"

    def __init__(self, table: str, database: str | None = None) -> None:
        self.table = check_identifier(table)
        self.database = check_identifier(database, what="database name") if database else None

    def qualified(self, default_database: str) -> str:
        return _qualified(self.table, self.database, default_database)

    @staticmethod
    def from_proto(storage_proto: SavedDatasetStorageProto) -> SavedDatasetHiveStorage:
        options = json.loads(storage_proto.custom_storage.configuration or b"{}")
        return SavedDatasetHiveStorage(table=options["table"], database=options.get("database"))

    def to_proto(self) -> SavedDatasetStorageProto:
        return self._custom_storage_proto(_table_options(self.table, self.database))

    def to_data_source(self) -> DataSource:
        return HiveSource(table=self.table, database=self.database, timestamp_field="event_timestamp",
                          date_partition_column=None)


class HiveLoggingDestination(LoggingDestination):
    """Feature logs of a feature service (``LoggingConfig(destination=HiveLoggingDestination(table=…))``): appended
    to an unpartitioned Parquet table on HiveServer2, created with the logging schema on first write."""

    _proto_kind = "hive_destination"

    def __init__(self, *, table: str, database: str | None = None) -> None:
        self.table = check_identifier(table)
        self.database = check_identifier(database, what="database name") if database else None

    def qualified(self, default_database: str) -> str:
        return _qualified(self.table, self.database, default_database)

    @classmethod
    def from_proto(cls, config_proto: LoggingConfigProto) -> HiveLoggingDestination:
        config = dict(config_proto.custom_destination.config)
        return cls(table=config["table"], database=config.get("database") or None)

    def to_proto(self) -> LoggingConfigProto:
        config = {"table": self.table, **({"database": self.database} if self.database else {})}
        return LoggingConfigProto(custom_destination=LoggingConfigProto.CustomDestination(
            kind=self._proto_kind, config=config))

    def to_data_source(self) -> DataSource:
        from feast.feature_logging import LOG_TIMESTAMP_FIELD

        return HiveSource(table=self.table, database=self.database, timestamp_field=LOG_TIMESTAMP_FIELD,
                          date_partition_column=None)
