"""What modelsvc's two Feast offline stores' retrieval jobs share (``features.local``, ``features.hive``)."""

from __future__ import annotations

import pandas as pd
from feast.infra.offline_stores.offline_store import RetrievalJob, RetrievalMetadata
from feast.on_demand_feature_view import OnDemandFeatureView


class ArrowRetrievalJob(RetrievalJob):
    """Feast's bookkeeping properties, and the DataFrame from the Arrow table ``_to_arrow_internal`` computes."""

    def __init__(self, *, full_feature_names: bool, on_demand_feature_views: list[OnDemandFeatureView] | None = None,
                 metadata: RetrievalMetadata | None = None) -> None:
        self._full_feature_names = full_feature_names
        self._on_demand_feature_views = on_demand_feature_views or []
        self._metadata = metadata

    @property
    def full_feature_names(self) -> bool:
        return self._full_feature_names

    @property
    def on_demand_feature_views(self) -> list[OnDemandFeatureView]:
        return self._on_demand_feature_views

    @property
    def metadata(self) -> RetrievalMetadata | None:
        return self._metadata

    def _to_df_internal(self, timeout: int | None = None) -> pd.DataFrame:
        return self._to_arrow_internal(timeout).to_pandas()
