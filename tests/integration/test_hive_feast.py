"""The Feast Hive offline store against a real HiveServer2: point-in-time retrieval and materialization give the
same results as the local DuckDB store and as a brute-force reference; the entity table never outlives a query.
"""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from modelsvc.config import load_settings
from modelsvc.errors import NotFoundError
from modelsvc.warehouse import open_warehouse
from tests.conftest import CONFIGS, REPO_ROOT
from tests.feature_data import (
    OFFLINE_SCHEMA,
    REALTIME_SCHEMA,
    brute_force_pit,
    random_case,
    write_offline,
    write_realtime,
)
from tests.fixtures.hive import create_database

pytestmark = [pytest.mark.integration, pytest.mark.hive, pytest.mark.slow]

OFFLINE = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]
REALTIME = ["current_page_views_10m"]


def _with_ds(df: pd.DataFrame, schema: pa.Schema, *, snapshot: bool) -> pa.Table:
    shifted = df["event_timestamp"] - pd.Timedelta(days=1) if snapshot else df["event_timestamp"]
    table = pa.Table.from_pandas(df.reset_index(drop=True), schema=schema, preserve_index=False)
    return table.append_column("ds", pa.array(shifted.dt.strftime("%Y-%m-%d").tolist(), pa.string()))


@pytest.fixture(scope="module")
def engines(hive_server, tmp_path_factory):
    """(local settings, hive settings, impressions, offline rows, realtime rows): the same feature tables in the
    local Parquet warehouse and in a fresh Hive database."""
    base: Path = tmp_path_factory.mktemp("feast_parity")
    shutil.copytree(REPO_ROOT / "feature_repo", base / "feature_repo",
                    ignore=shutil.ignore_patterns("data", "__pycache__", "*.db"))
    off, rt, imp = random_case(5, users=8, days=4, impressions=80)
    common = {"features": {"repo_path": str(base / "feature_repo")}}
    local = load_settings(CONFIGS, paths={"root": str(base / "local")}, **common)
    database = create_database(hive_server, "feast")
    hive = load_settings(CONFIGS, paths={"root": str(base / "hive")},
                         **{**hive_server.settings_overrides(database=database), **common})
    write_offline(local.paths.resolve("root"), off)
    write_realtime(local.paths.resolve("root"), rt)
    with open_warehouse(hive) as wh:
        wh.write_partitions(hive.tables.user_features, _with_ds(off, OFFLINE_SCHEMA, snapshot=True))
        wh.write_partitions(hive.tables.realtime_features, _with_ds(rt, REALTIME_SCHEMA, snapshot=False))
    return local, hive, imp, off, rt


def _entity_tables(settings) -> list[str]:
    with open_warehouse(settings) as wh:
        rows = wh.scalar_rows(f"SHOW TABLES IN `{wh.scratch_database}`")
    return [str(r) for r in rows if "modelsvc_entity" in str(r)]


def _norm(df: pd.DataFrame, columns: list[str]) -> list[dict]:
    out = df.sort_values("event_id")[["event_id", *columns]].astype(object)
    return out.where(out.notna(), None).to_dict("records")


def test_point_in_time_join_matches_duckdb_and_brute_force(engines) -> None:
    from modelsvc.features import historical_features

    local, hive, imp, off, rt = engines
    results = {s.warehouse.engine: historical_features(s, imp).table.to_pandas() for s in (local, hive)}
    got, expected = results["hive"], results["duckdb"]
    assert len(got) == len(imp)
    assert got["event_id"].is_unique
    assert list(got.columns) == list(expected.columns)
    columns = [c for c in expected.columns if c != "event_id"]
    assert _norm(got, columns) == _norm(expected, columns)  # every column, value by value

    reference = brute_force_pit(imp, off, OFFLINE, timedelta(days=hive.features.offline_ttl_days)).merge(
        brute_force_pit(imp, rt, REALTIME, timedelta(minutes=hive.features.realtime_ttl_minutes)), on="event_id")
    assert _norm(got, OFFLINE + REALTIME) == _norm(reference, OFFLINE + REALTIME)
    # the planted edges are there: matches at exactly ttl, misses 1 µs past it, nulls for no match
    assert got["total_orders_7d"].isna().any()
    assert got["total_orders_7d"].notna().any()
    assert got["current_page_views_10m"].isna().any()
    assert got["current_page_views_10m"].notna().any()
    assert _entity_tables(hive) == []


def test_full_feature_names_sql_entities_and_cleanup_on_error(engines) -> None:
    from modelsvc.features import feature_refs, feature_store

    _, hive, imp, _, _ = engines
    store = feature_store(hive)
    refs = feature_refs(store, hive)
    sample = imp.head(6)
    by_frame = store.get_historical_features(entity_df=sample, features=refs, full_feature_names=True).to_df()
    assert "user_offline_features__total_orders_7d" in by_frame.columns
    assert "user_realtime_features__current_page_views_10m" in by_frame.columns

    # the same rows given as a query: the server materializes the entity table itself
    selects = [f"SELECT '{r.event_id}' AS event_id, CAST({int(r.user_id)} AS BIGINT) AS user_id, "
               f"TIMESTAMP '{r.event_timestamp.strftime('%Y-%m-%d %H:%M:%S.%f')}' AS event_timestamp"
               for r in sample.itertuples()]
    job = store.get_historical_features(entity_df=" UNION ALL ".join(selects), features=refs,
                                        full_feature_names=True)
    by_sql = job.to_df()
    cols = [c for c in by_frame.columns if "__" in c]
    assert _norm(by_sql, cols) == _norm(by_frame, cols)
    assert "user_offline_features__total_orders_7d" in job.to_sql()
    assert _entity_tables(hive) == []

    # a query that fails after the upload still drops the entity table
    with open_warehouse(hive) as wh:
        wh.execute(f"ALTER TABLE {wh.qualified(hive.tables.realtime_features)} "
                   f"RENAME TO {wh.qualified('realtime_away')}")
    try:
        with pytest.raises(NotFoundError, match=r"HiveServer2 at 127\.0\.0\.1:\d+: .*user_realtime_features"):
            store.get_historical_features(entity_df=sample, features=refs).to_df()
        assert _entity_tables(hive) == []
    finally:
        with open_warehouse(hive) as wh:
            wh.execute(f"ALTER TABLE {wh.qualified('realtime_away')} "
                       f"RENAME TO {wh.qualified(hive.tables.realtime_features)}")


def test_materialize_loads_the_same_online_values(engines) -> None:
    from modelsvc.features import get_online_features, materialize

    local, hive, imp, off, _ = engines
    end = (off["event_timestamp"].max() + pd.Timedelta(hours=1)).to_pydatetime()
    reports = {s.warehouse.engine: materialize(s, end=end) for s in (local, hive)}
    assert [v.rows for v in reports["hive"].views] == [v.rows for v in reports["duckdb"].views]
    assert reports["hive"].rows > 0
    users = sorted(int(u) for u in imp["user_id"].unique())
    online = {s.warehouse.engine: get_online_features(s, users) for s in (local, hive)}
    got = online["hive"].sort_values("user_id").reset_index(drop=True)
    expected = online["duckdb"].sort_values("user_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[sorted(got.columns)], expected[sorted(expected.columns)])
    assert got["total_orders_7d"].notna().any()
