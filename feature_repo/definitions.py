"""The feature definitions of modelsvc, written once for every engine.

``build_definitions(settings)`` returns the Feast objects; the data sources come from
``modelsvc.features.batch_source`` (local Parquet or Hive, by ``warehouse.engine``), ttls and names from the
settings. ``modelsvc materialize`` / ``build-dataset`` call it with their own settings; ``repo.py`` exposes the
objects to the ``feast`` CLI.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from feast import Entity, FeatureService, FeatureView, Field, ValueType
from feast.types import Float64, Int64, String

OFFLINE_VIEW = "user_offline_features"
REALTIME_VIEW = "user_realtime_features"
# the timestamp of the joined feature row (epoch microseconds), returned beside the features so that
# build-dataset can check for leakage (see modelsvc.features.local)
OFFLINE_TS = "offline_feature_ts_us"
REALTIME_TS = "realtime_feature_ts_us"


def build_definitions(settings: Any) -> list[Any]:
    """Entity, the two feature views and the model's feature service for ``settings``."""
    from modelsvc.features import batch_source

    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64,
                  description="a user of the site")
    offline = FeatureView(
        name=OFFLINE_VIEW,
        entities=[user],
        ttl=timedelta(days=settings.features.offline_ttl_days),
        schema=[
            Field(name="total_orders_7d", dtype=Int64),
            Field(name="avg_purchase_value_30d", dtype=Float64),
            Field(name="last_seen_platform", dtype=String),
            Field(name=OFFLINE_TS, dtype=Int64),
        ],
        online=True,
        source=batch_source(settings, settings.tables.user_features, feature_ts_column=OFFLINE_TS),
        description="daily snapshots: orders and purchases over trailing windows, last platform",
    )
    realtime = FeatureView(
        name=REALTIME_VIEW,
        entities=[user],
        ttl=timedelta(minutes=settings.features.realtime_ttl_minutes),
        schema=[
            Field(name="current_page_views_10m", dtype=Int64),
            Field(name=REALTIME_TS, dtype=Int64),
        ],
        online=True,
        source=batch_source(settings, settings.tables.realtime_features, feature_ts_column=REALTIME_TS),
        description="page views in the 10 minutes before the window end",
    )
    service = FeatureService(
        name=settings.features.feature_service,
        features=[
            offline[["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]],
            realtime[["current_page_views_10m"]],
        ],
        description="the features of the CTR model",
    )
    return [user, offline, realtime, service]
