"""Feast's point-in-time join (our repo, the local DuckDB store) against a brute-force reference."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from tests.feature_data import (
    OFFLINE_SCHEMA,
    brute_force_pit,
    random_case,
    write_offline,
    write_realtime,
    write_table,
)

OFFLINE = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]
REALTIME = ["current_page_views_10m"]

pytestmark = pytest.mark.slow


def _norm(v: object) -> object:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return None
    if isinstance(v, (np.integer, int)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        return round(float(v), 6)
    return v


@pytest.mark.parametrize("seed", [1, 2])
def test_pit_join_matches_brute_force(settings, workdir, seed):
    from modelsvc.features import historical_features

    off, rt, imp = random_case(seed)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)

    got = historical_features(settings, imp)
    df = got.table.to_pandas().set_index("event_id").sort_index()
    assert len(df) == len(imp)  # one row per impression: no fan-out, none dropped
    assert set(got.timestamp_columns) == {"offline_feature_ts_us", "realtime_feature_ts_us"}

    ref = brute_force_pit(imp, off, OFFLINE + ["event_timestamp"], timedelta(days=7)).merge(
        brute_force_pit(imp, rt, REALTIME + ["event_timestamp"], timedelta(minutes=30)),
        on="event_id", suffixes=("_off", "_rt")).set_index("event_id").sort_index()

    mismatches = []
    for col in OFFLINE + REALTIME:
        for eid, a, b in zip(df.index, df[col], ref.loc[df.index, col], strict=True):
            if _norm(a) != _norm(b):
                mismatches.append((col, eid, a, b))
    assert not mismatches, mismatches[:10]

    # the returned feature-row timestamps are those of the reference row (and never after the impression)
    for ts_col, ref_col in (("offline_feature_ts_us", "event_timestamp_off"),
                            ("realtime_feature_ts_us", "event_timestamp_rt")):
        want = ref.loc[df.index, ref_col].map(lambda t: None if t is None or pd.isna(t) else t.value // 1000)
        assert [_norm(v) for v in df[ts_col]] == [_norm(v) for v in want]


def test_ttl_edges_and_created_tie_break(settings, workdir):
    """Hand-made cases: exactly at ttl is joined, 1 µs past is not; equal event times → later created wins."""
    from modelsvc.features import historical_features

    t = pd.Timestamp("2026-01-03T00:00:00Z")
    off = pd.DataFrame({
        "user_id": [1, 1, 2],
        "event_timestamp": [t, t, t],
        "created_timestamp": [t + pd.Timedelta(minutes=1), t + pd.Timedelta(minutes=9), t],
        "total_orders_7d": [10, 20, 30],
        "avg_purchase_value_30d": [1.0, 2.0, 3.0],
        "last_seen_platform": ["web", "ios", "android"],
    })
    rt = pd.DataFrame({"user_id": [1], "event_timestamp": [t], "created_timestamp": [t],
                       "current_page_views_10m": [7]})
    for df in (off, rt):
        for c in ("event_timestamp", "created_timestamp"):
            df[c] = df[c].dt.as_unit("us")
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    us = pd.Timedelta(microseconds=1)
    imp = pd.DataFrame({
        "event_id": ["at", "before", "ttl", "past", "rt_ttl", "rt_past", "u2"],
        "user_id": [1, 1, 1, 1, 1, 1, 2],
        "event_timestamp": [t, t - us, t + pd.Timedelta(days=7), t + pd.Timedelta(days=7) + us,
                            t + pd.Timedelta(minutes=30), t + pd.Timedelta(minutes=30) + us, t + us],
        "is_clicked": [0, 1, 0, 1, 0, 1, 0],
    })
    imp["event_timestamp"] = imp["event_timestamp"].dt.as_unit("us")
    df = historical_features(settings, imp).table.to_pandas().set_index("event_id")
    orders = {k: _norm(v) for k, v in df["total_orders_7d"].items()}
    assert orders == {"at": 20, "before": None, "ttl": 20, "past": None, "rt_ttl": 20, "rt_past": 20, "u2": 30}
    views = {k: _norm(v) for k, v in df["current_page_views_10m"].items()}
    assert views == {"at": 7, "before": None, "ttl": None, "past": None, "rt_ttl": 7, "rt_past": None, "u2": None}
    assert df.loc["at", "last_seen_platform"] == "ios"


def _feast_ibis_plan(store, views, refs, entity_df, full_feature_names):
    """Feast's own plan (get_historical_features_ibis, our reader): the semantics the ASOF plan keeps."""
    from feast.infra.offline_stores.ibis import get_historical_features_ibis

    from modelsvc.features.local import LocalDuckDBOfflineStore

    return get_historical_features_ibis(
        config=store.config, feature_views=views, feature_refs=refs, entity_df=entity_df, registry=store.registry,
        project=store.project, full_feature_names=full_feature_names,
        **LocalDuckDBOfflineStore._common(store.config)).to_arrow()


@pytest.mark.parametrize("full_feature_names", [False, True])
def test_asof_plan_equals_feast_plan_keeps_entity_order(settings, workdir, full_feature_names):
    """Same schema and values as Feast's ibis plan; every entity row once, in the entity order (duplicates too)."""
    from modelsvc.features import feature_refs, feature_store
    from modelsvc.features.local import AsofRetrievalJob

    off, rt, imp = random_case(3, impressions=200)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    # shuffled, with exact duplicate rows and rows sharing (user, time) under other ids
    same_key = imp.sample(n=15, random_state=2).assign(event_id=lambda d: d["event_id"] + "-bis")
    imp = pd.concat([imp, imp.iloc[:20], same_key], ignore_index=True).sample(frac=1, random_state=5)
    imp = imp.reset_index(drop=True)

    store = feature_store(settings)
    refs = feature_refs(store, settings) + ["user_offline_features:offline_feature_ts_us",
                                            "user_realtime_features:realtime_feature_ts_us"]
    job = store.get_historical_features(entity_df=imp, features=refs, full_feature_names=full_feature_names)
    assert isinstance(job, AsofRetrievalJob)
    got = job.to_arrow()
    views = [store.get_feature_view(name) for name in ("user_offline_features", "user_realtime_features")]
    from feast.utils import make_df_tzaware

    want = _feast_ibis_plan(store, views, refs, make_df_tzaware(imp), full_feature_names)

    assert got.schema == want.schema
    assert got.column("event_id").to_pylist() == imp["event_id"].tolist()  # entity order, each row once
    columns = got.column_names
    assert ("user_offline_features__total_orders_7d" in columns) == full_feature_names
    key = [(c, "ascending") for c in columns]
    assert got.sort_by(key).equals(want.sort_by(key))
    df = job.to_df()
    assert list(df.columns) == columns and len(df) == len(imp)


def test_created_timestamp_cutoff_uses_feast_plan(settings, workdir):
    """filter_by_created_timestamp is not in the ASOF plan: Feast's own plan answers it."""
    from modelsvc.features import feature_refs, feature_store
    from modelsvc.features.local import AsofRetrievalJob

    off, rt, imp = random_case(4, impressions=50)
    write_offline(workdir / "data", off)
    write_realtime(workdir / "data", rt)
    store = feature_store(settings)
    job = store.get_historical_features(entity_df=imp, features=feature_refs(store, settings),
                                        filter_by_created_timestamp=True)
    assert not isinstance(job, AsofRetrievalJob)
    assert job.to_arrow().num_rows == len(imp)


def test_null_timestamps_as_feast_plan(settings, workdir):
    """A null created timestamp loses the tie; a null event timestamp (feature or entity row) joins nothing."""
    from feast.utils import make_df_tzaware

    from modelsvc.features import feature_refs, feature_store

    t = pd.Timestamp("2026-01-03T00:00:00Z")
    off = pd.DataFrame({
        "user_id": [1, 1, 2, 2, 3],
        "event_timestamp": [t, t, t, None, t],
        "created_timestamp": [t + pd.Timedelta(minutes=1), None, None, t, None],
        "total_orders_7d": [10, 20, 30, 40, 50],
        "avg_purchase_value_30d": [1.0, 2.0, 3.0, 4.0, 5.0],
        "last_seen_platform": ["web", "ios", "android", "web", "ios"],
    })
    rt = pd.DataFrame({"user_id": [1], "event_timestamp": [t], "created_timestamp": [t],
                       "current_page_views_10m": [7]})
    for df in (off, rt):
        for c in ("event_timestamp", "created_timestamp"):
            df[c] = pd.to_datetime(df[c], utc=True).dt.as_unit("us")
    write_offline(workdir / "data", off.iloc[[0, 1, 2, 4]])
    # the null-time row has no ds of its own: put it in a partition by hand
    write_table(workdir / "data", "user_features_precomputed", off.iloc[[3]].reset_index(drop=True), OFFLINE_SCHEMA,
                pd.Series(["2026-01-09"]))
    write_realtime(workdir / "data", rt)
    times = [t, t + pd.Timedelta(hours=1), t, None, t + pd.Timedelta(days=9)]
    imp = pd.DataFrame({"event_id": ["a", "b", "c", "d", "e"], "user_id": [1, 2, 3, 1, 2],
                        "event_timestamp": pd.to_datetime(times, utc=True).as_unit("us"),
                        "is_clicked": [0, 1, 0, 1, 0]})
    store = feature_store(settings)
    refs = feature_refs(store, settings)
    got = store.get_historical_features(entity_df=imp, features=refs).to_arrow()
    views = [store.get_feature_view(name) for name in ("user_offline_features", "user_realtime_features")]
    want = _feast_ibis_plan(store, views, refs, make_df_tzaware(imp), False)
    key = [("event_id", "ascending")]
    assert got.sort_by(key).equals(want.sort_by(key))
    assert got.column("total_orders_7d").to_pylist() == [10, 30, 50, None, None]
