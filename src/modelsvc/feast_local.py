"""Deprecated import path of :mod:`modelsvc.features.local` (kept for existing ``feature_store.yaml`` files,
which name ``modelsvc.feast_local.LocalDuckDBOfflineStore``).

Use ``modelsvc.features.local.LocalDuckDBOfflineStore`` in new files; modelsvc writes that path itself. This
shim emits no warning: Feast imports it on every command of a repo that names it, and a warning there would
repeat on every run without anything for the user to do but edit the yaml. It will be removed in a later release.
"""

from __future__ import annotations

from modelsvc.features.local import (
    AsofRetrievalJob,
    LocalDuckDBOfflineStore,
    LocalDuckDBOfflineStoreConfig,
    asof_historical_features,
    asof_sql,
    read_source,
)

__all__ = [
    "AsofRetrievalJob", "LocalDuckDBOfflineStore", "LocalDuckDBOfflineStoreConfig", "asof_historical_features",
    "asof_sql", "read_source",
]
