"""Feast offline store plugin for Hive (HiveServer2): ``HiveSource`` and ``HiveOfflineStore``.

In feature_store.yaml::

    offline_store:
      type: modelsvc.feast_hive.HiveOfflineStore
      host: hive.example.internal
      port: 10000
      database: default
      password: ${MODELSVC_HIVE__PASSWORD}   # expanded when connecting; only for auth LDAP/CUSTOM

Feast resolves ``type`` to this package's ``HiveOfflineStore`` and its config class ``HiveOfflineStoreConfig``.
Importing this package imports feast and pyhive's adapter: only ``modelsvc.features`` imports it, lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelsvc.feast_hive.source import FEATURE_TS_TAG, HiveSource, hive_to_feast_value_type
from modelsvc.feast_hive.store import HiveOfflineStore, HiveOfflineStoreConfig, HiveRetrievalJob

if TYPE_CHECKING:
    from modelsvc.config import Settings

STORE_TYPE = "modelsvc.feast_hive.HiveOfflineStore"
PASSWORD_ENV = "MODELSVC_HIVE__PASSWORD"


def offline_store_config(settings: Settings, *, for_file: bool = True) -> dict[str, Any]:
    """The ``offline_store`` section for ``settings.hive``.

    The password is never included as such: with ``for_file`` (the default) it is written as
    ``${MODELSVC_HIVE__PASSWORD}`` (Feast and this store expand it); ``for_file=False`` returns the secret itself
    for an in-memory RepoConfig.
    """
    hive = settings.hive
    config: dict[str, Any] = {
        "type": STORE_TYPE, "host": hive.host, "port": hive.port, "database": hive.database,
        "scratch_database": hive.scratch_database, "username": hive.username, "auth": hive.auth,
        "kerberos_service_name": hive.kerberos_service_name, "connect_timeout_s": hive.connect_timeout_s,
        "query_timeout_s": hive.query_timeout_s,
    }
    if hive.password is not None:
        config["password"] = "${" + PASSWORD_ENV + "}" if for_file else hive.password.get_secret_value()
    return {k: v for k, v in config.items() if v is not None}


def hive_source(settings: Settings, table: str, *, timestamp_field: str, created_timestamp_column: str | None = None,
                tags: dict[str, str] | None = None, field_mapping: dict[str, str] | None = None) -> HiveSource:
    """The HiveSource of warehouse table ``table`` in ``settings.hive.database`` (partitioned by ``ds``)."""
    return HiveSource(name=table, table=table, database=settings.hive.database, timestamp_field=timestamp_field,
                      created_timestamp_column=created_timestamp_column or "", field_mapping=field_mapping,
                      date_partition_column="ds", tags=tags,
                      description=f"Hive table {settings.hive.database}.{table} (Parquet, partitioned by ds)")


__all__ = [
    "FEATURE_TS_TAG", "HiveOfflineStore", "HiveOfflineStoreConfig", "HiveRetrievalJob", "HiveSource",
    "hive_source", "hive_to_feast_value_type", "offline_store_config",
]
