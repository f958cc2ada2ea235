"""Deprecated import path of :mod:`modelsvc.features.hive` (kept for existing ``feature_store.yaml`` files and
registries, which name ``modelsvc.feast_hive.HiveOfflineStore`` / ``modelsvc.feast_hive.HiveSource``).

Use ``modelsvc.features.hive.HiveOfflineStore`` in new files; modelsvc writes that path itself. This shim emits
no warning: Feast imports it on every command of a repo that names it, and a warning there would repeat on every
run without anything for the user to do but edit the yaml. It will be removed in a later release.
"""

from __future__ import annotations

from modelsvc.features.hive import (
    FEATURE_TS_TAG,
    HiveOfflineStore,
    HiveOfflineStoreConfig,
    HiveRetrievalJob,
    HiveSource,
    hive_source,
    hive_to_feast_value_type,
    offline_store_config,
)

__all__ = [
    "FEATURE_TS_TAG", "HiveOfflineStore", "HiveOfflineStoreConfig", "HiveRetrievalJob", "HiveSource",
    "hive_source", "hive_to_feast_value_type", "offline_store_config",
]
