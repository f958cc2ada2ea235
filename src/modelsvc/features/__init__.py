"""Feast in modelsvc: one package for the feature store and modelsvc's two offline stores.

- :mod:`modelsvc.features.store`: the store setup from the settings (``store_config``, ``feature_store``,
  ``batch_source``), materialization (``materialize``) and retrieval (``historical_features``,
  ``get_online_features``); re-exported here, so ``modelsvc.features.materialize`` etc. are the API.
- :mod:`modelsvc.features.local`: the offline store of the local engine (Feast's DuckDB store over the
  partitioned Parquet tables, plus its own ASOF point-in-time join).
- :mod:`modelsvc.features.hive`: the Hive offline store plugin (``config``, ``source``, ``store``).
- :mod:`modelsvc.features.job`: the retrieval job both offline stores share.
- :mod:`modelsvc.features.names`: the tag and class-path names, defined once.

Importing this package does not import feast: ``store`` imports it inside its functions; ``local``, ``hive``
and ``job`` import it at the top and are imported only when Feast needs them.
"""

from __future__ import annotations

from modelsvc.features.names import FEATURE_TS_TAG, HIVE_OFFLINE_STORE, LOCAL_OFFLINE_STORE
from modelsvc.features.store import (
    CREATED_TIMESTAMP_FIELD,
    DEFINITIONS_FILE,
    TIMESTAMP_FIELD,
    HistoricalFeatures,
    MaterializeReport,
    ViewMaterialization,
    apply_definitions,
    batch_source,
    check_online_store,
    feature_refs,
    feature_store,
    get_online_features,
    historical_features,
    load_definitions,
    materialize,
    repo_config,
    repo_path,
    settings_for_repo,
    store_config,
    write_store_yaml,
)

__all__ = [
    "CREATED_TIMESTAMP_FIELD", "DEFINITIONS_FILE", "FEATURE_TS_TAG", "HIVE_OFFLINE_STORE", "LOCAL_OFFLINE_STORE",
    "TIMESTAMP_FIELD", "HistoricalFeatures", "MaterializeReport", "ViewMaterialization", "apply_definitions",
    "batch_source", "check_online_store", "feature_refs", "feature_store", "get_online_features",
    "historical_features", "load_definitions", "materialize", "repo_config", "repo_path", "settings_for_repo",
    "store_config", "write_store_yaml",
]
