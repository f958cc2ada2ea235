"""Names that Feast objects, registries and ``feature_store.yaml`` files refer to, defined once.

Light on purpose (no feast import): the store setup, both offline stores and the Hive source read them.
"""

from __future__ import annotations

# a data-source tag: the offline store adds an int64 column of this name holding the source's timestamp field
# in epoch microseconds (every modelsvc offline store honours it; build-dataset's leakage check reads it)
FEATURE_TS_TAG = "modelsvc.feature_ts_column"

# the class paths modelsvc writes into feature_store.yaml and registry protos; the pre-package paths
# (modelsvc.feast_local.…, modelsvc.feast_hive.…) stay importable as shims for files written before
LOCAL_OFFLINE_STORE = "modelsvc.features.local.LocalDuckDBOfflineStore"
HIVE_OFFLINE_STORE = "modelsvc.features.hive.HiveOfflineStore"
HIVE_SOURCE = "modelsvc.features.hive.HiveSource"
