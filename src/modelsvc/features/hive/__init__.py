"""Feast offline store plugin for Hive (HiveServer2): ``HiveSource`` and ``HiveOfflineStore``.

In feature_store.yaml::

    offline_store:
      type: modelsvc.features.hive.HiveOfflineStore
      host: hive.example.internal
      port: 10000
      database: default
      password: ${MODELSVC_HIVE__PASSWORD}   # expanded when connecting; only for auth LDAP/CUSTOM

Feast resolves ``type`` to this package's ``HiveOfflineStore`` and its config class ``HiveOfflineStoreConfig``
(the former path ``modelsvc.feast_hive.HiveOfflineStore`` still works). Modules: ``config`` (the yaml section,
built from ``HiveSettings``), ``source`` (``HiveSource``), ``store`` (the offline store and its job). Importing
this package imports feast and pyhive's adapter: only ``modelsvc.features.store`` imports it, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelsvc.features.hive.config import offline_store_config
from modelsvc.features.hive.source import (
    HiveLoggingDestination,
    HiveSource,
    SavedDatasetHiveStorage,
    hive_to_feast_value_type,
)
from modelsvc.features.hive.store import HiveOfflineStore, HiveOfflineStoreConfig, HiveRetrievalJob
from modelsvc.features.names import FEATURE_TS_TAG

if TYPE_CHECKING:
    from modelsvc.config import Settings


def hive_source(settings: Settings, table: str, *, timestamp_field: str, created_timestamp_column: str | None = None,
                tags: dict[str, str] | None = None, field_mapping: dict[str, str] | None = None) -> HiveSource:
    """The HiveSource of warehouse table ``table`` in ``settings.hive.database`` (partitioned by ``ds``)."""
    return HiveSource(name=table, table=table, database=settings.hive.database, timestamp_field=timestamp_field,
                      created_timestamp_column=created_timestamp_column or "", field_mapping=field_mapping,
                      date_partition_column="ds", tags=tags,
                      description=f"Hive table {settings.hive.database}.{table} (Parquet, partitioned by ds)")


__all__ = [
    "FEATURE_TS_TAG", "HiveLoggingDestination", "HiveOfflineStore", "HiveOfflineStoreConfig", "HiveRetrievalJob",
    "HiveSource", "SavedDatasetHiveStorage", "hive_source", "hive_to_feast_value_type", "offline_store_config",
]
