"""The Feast Hive offline store as a Feast store on its own, against a real HiveServer2 (Spark's Thrift server):
list-typed features, schema inference, retrieval without an entity dataframe, saved datasets, pushes to the
offline store and feature logging, on partitioned and unpartitioned tables.

Spark is slow on a small machine: each test makes many assertions on one set of tables.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from modelsvc.config import load_settings
from modelsvc.warehouse import open_warehouse
from tests.conftest import CONFIGS
from tests.fixtures.hive import create_database

pytestmark = [pytest.mark.integration, pytest.mark.hive, pytest.mark.slow]

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
COLUMNS = ("`user_id` BIGINT, `event_timestamp` TIMESTAMP, `ints` ARRAY<INT>, `doubles` ARRAY<DOUBLE>, "
           "`flags` ARRAY<BOOLEAN>, `times` ARRAY<TIMESTAMP>, `label` STRING")
# (user, timestamp, ints, doubles, flags, times, label): user 1 has two rows (the later one wins), user 3 one
# row a day earlier; empty and null arrays, NaN and a null element included
ROWS = [
    (1, T0 - timedelta(hours=2), [1, 1], [0.5, -2.25], [True, False],
     [datetime(2024, 1, 1, tzinfo=UTC), datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)], "old"),
    (1, T0, [7, 8, 9], [float("nan"), 1e300], [False], [datetime(2024, 4, 30, 23, 59, 59, tzinfo=UTC)], "new"),
    (2, T0 - timedelta(hours=1), [], [], [], [], "empty"),
    (3, T0 - timedelta(days=1), None, [1.0, None], None, None, "nulls"),
]


def _array_sql(values: list | None, element: str) -> str:
    if values is None:
        return f"CAST(NULL AS ARRAY<{element}>)"
    items = []
    for v in values:
        if v is None:
            items.append(f"CAST(NULL AS {element})")
        elif isinstance(v, datetime):
            items.append(f"TIMESTAMP '{v.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}'")
        elif isinstance(v, bool):
            items.append("TRUE" if v else "FALSE")
        elif isinstance(v, float) and math.isnan(v):
            items.append("CAST('NaN' AS DOUBLE)")
        else:
            items.append(f"CAST({v!r} AS {element})")
    return f"array({', '.join(items)})" if items else f"CAST(array() AS ARRAY<{element}>)"


def _insert_sql(table: str, row: tuple, *, partitioned: bool) -> str:
    user, ts, ints, doubles, flags, times, label = row
    part = f" PARTITION (`ds`='{ts:%Y-%m-%d}')" if partitioned else ""
    return (f"INSERT INTO TABLE {table}{part} SELECT CAST({user} AS BIGINT), "
            f"TIMESTAMP '{ts.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}', {_array_sql(ints, 'INT')}, "
            f"{_array_sql(doubles, 'DOUBLE')}, {_array_sql(flags, 'BOOLEAN')}, {_array_sql(times, 'TIMESTAMP')}, "
            f"'{label}'")


def _same(got: object, want: object) -> bool:
    """Equal values, NaN equal to NaN, timestamps compared as UTC instants."""
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    if isinstance(want, float) and math.isnan(want):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(want, datetime):
        return isinstance(got, datetime) and pd.Timestamp(got) == pd.Timestamp(want)
    return bool(got == want)


@pytest.fixture(scope="module")
def hive_store(hive_server, tmp_path_factory):
    """(settings, FeatureStore, feature views): two tables with list columns, one partitioned by ds, one not; a
    view without a schema (inferred) over the first, a view with a declared schema over the second."""
    from feast import Entity, FeatureStore, FeatureView, Field, ValueType
    from feast.repo_config import RepoConfig
    from feast.types import Array, Bool, Float64, Int32, String, UnixTimestamp

    from modelsvc.features import store_config
    from modelsvc.features.hive import HiveSource

    base: Path = tmp_path_factory.mktemp("hive_store")
    database = create_database(hive_server, "fstore")
    settings = load_settings(CONFIGS, paths={"root": str(base / "data")},
                             **hive_server.settings_overrides(database=database))
    with open_warehouse(settings) as wh:
        wh.execute(f"CREATE TABLE {wh.qualified('lists_part')} ({COLUMNS}) PARTITIONED BY (`ds` STRING) "
                   "STORED AS PARQUET")
        wh.execute(f"CREATE TABLE {wh.qualified('lists_flat')} ({COLUMNS}) STORED AS PARQUET")
        for row in ROWS:
            wh.execute(_insert_sql(wh.qualified("lists_part"), row, partitioned=True))
            wh.execute(_insert_sql(wh.qualified("lists_flat"), row, partitioned=False))
    settings.paths.resolve("feast").mkdir(parents=True, exist_ok=True)
    store = FeatureStore(config=RepoConfig(repo_path=base, **store_config(settings)))
    user = Entity(name="user", join_keys=["user_id"], value_type=ValueType.INT64)
    inferred = FeatureView(name="part_lists", entities=[user], ttl=timedelta(days=2), online=True,
                           source=HiveSource(table="lists_part", timestamp_field="event_timestamp"))
    declared = FeatureView(
        name="flat_lists", entities=[user], ttl=timedelta(days=2), online=True,
        schema=[Field(name="ints", dtype=Array(Int32)), Field(name="doubles", dtype=Array(Float64)),
                Field(name="flags", dtype=Array(Bool)), Field(name="times", dtype=Array(UnixTimestamp)),
                Field(name="label", dtype=String)],
        source=HiveSource(table="lists_flat", timestamp_field="event_timestamp", date_partition_column=None))
    store.apply([user, inferred, declared])
    return settings, store


FEATURES = ["ints", "doubles", "flags", "times", "label"]


def _latest(user: int, at: datetime, ttl: timedelta = timedelta(days=2)) -> dict | None:
    rows = [r for r in ROWS if r[0] == user and at - ttl <= r[1] <= at]
    if not rows:
        return None
    row = max(rows, key=lambda r: r[1])
    return dict(zip(FEATURES, row[2:], strict=True))


@pytest.mark.timeout(900)
def test_lists_inference_non_entity_mode_and_saved_datasets(hive_store) -> None:
    from feast.errors import SavedDatasetLocationAlreadyExists

    from modelsvc.features.hive import SavedDatasetHiveStorage

    settings, store = hive_store
    # a view without a schema takes its features from the table, not the partition column
    inferred = store.get_feature_view("part_lists")
    assert sorted(f.name for f in inferred.features) == sorted(FEATURES)
    assert {f.name: str(f.dtype) for f in inferred.features}["ints"] == str(store.get_feature_view(
        "flat_lists").features[0].dtype)

    refs = [f"{view}:{f}" for view in ("part_lists", "flat_lists") for f in FEATURES]
    at = T0 + timedelta(minutes=1)
    entity_df = pd.DataFrame({"user_id": [1, 2, 3, 4, 1],
                              "event_timestamp": [at, at, at, at, T0 - timedelta(hours=1)]})
    job = store.get_historical_features(entity_df=entity_df, features=refs, full_feature_names=True)
    table = job.to_arrow()
    assert table.schema.field("flat_lists__ints").type == pa.list_(pa.int32())
    assert table.schema.field("part_lists__doubles").type == pa.list_(pa.float64())
    assert table.schema.field("flat_lists__flags").type == pa.list_(pa.bool_())
    assert pa.types.is_timestamp(table.schema.field("flat_lists__times").type.value_type)
    got = table.to_pylist()
    for row, (user, ts) in zip(got, zip(entity_df["user_id"], entity_df["event_timestamp"], strict=True),
                               strict=True):
        want = _latest(int(user), ts.to_pydatetime())
        for view in ("part_lists", "flat_lists"):
            for f in FEATURES:
                expected = None if want is None else want[f]
                assert _same(row[f"{view}__{f}"], expected), (user, ts, view, f, row[f"{view}__{f}"], expected)

    # no entity dataframe: every user with a row in [start, end], as of end
    end = T0 + timedelta(hours=1)
    by_range = store.get_historical_features(features=[f"flat_lists:{f}" for f in FEATURES],
                                             start_date=T0 - timedelta(hours=3), end_date=end).to_arrow()
    rows = sorted(by_range.to_pylist(), key=lambda r: r["user_id"])
    assert [r["user_id"] for r in rows] == [1, 2]  # user 3's only row is older than start
    for r in rows:
        assert pd.Timestamp(r["event_timestamp"]) == pd.Timestamp(end)
        want = _latest(r["user_id"], end)
        assert want is not None and all(_same(r[f], want[f]) for f in FEATURES), r
    unbounded = store.get_historical_features(features=["part_lists:ints"], end_date=end).to_df()
    assert sorted(unbounded["user_id"]) == [1, 2, 3]  # start defaults to end - ttl

    # saved datasets: written on the server, read back with the same values and types
    storage = SavedDatasetHiveStorage(table="saved_lists")
    store.create_saved_dataset(from_=job, name="lists", storage=storage)
    saved = store.get_saved_dataset("lists").to_arrow()
    assert saved.schema.field("flat_lists__ints").type == pa.list_(pa.int32())
    key = ["user_id", "event_timestamp"]
    assert_rows_equal(saved.to_pylist(), table.to_pylist(), key)
    with pytest.raises(SavedDatasetLocationAlreadyExists):
        store.create_saved_dataset(from_=job, name="lists_again", storage=storage)
    store.create_saved_dataset(from_=job, name="lists_again", storage=storage, allow_overwrite=True)

    # materialization reads the tables through pull_latest: the online store gets real lists
    store.materialize(start_date=T0 - timedelta(days=2), end_date=end, feature_views=["flat_lists"])
    online = store.get_online_features(features=[f"flat_lists:{f}" for f in FEATURES],
                                       entity_rows=[{"user_id": 1}, {"user_id": 2}]).to_dict()
    assert online["ints"] == [[7, 8, 9], []]
    assert online["flags"] == [[False], []]


def assert_rows_equal(got: list[dict], want: list[dict], key: list[str]) -> None:
    def order(r: dict) -> tuple:
        return tuple(str(r[k]) for k in key)

    assert len(got) == len(want)
    for g, w in zip(sorted(got, key=order), sorted(want, key=order), strict=True):
        assert set(g) == set(w)
        assert all(_same(g[c], w[c]) for c in w), (g, w)


@pytest.mark.timeout(900)
def test_offline_writes_and_feature_logging(hive_store) -> None:
    from feast import FeatureService
    from feast.feature_logging import LOG_TIMESTAMP_FIELD, LoggingConfig

    from modelsvc.features.hive import HiveLoggingDestination

    settings, store = hive_store
    later = T0 + timedelta(days=1, hours=3)
    pushed = pd.DataFrame({
        "user_id": pd.array([5, 6], dtype="int64"),
        "event_timestamp": [later, later + timedelta(hours=30)],
        "ints": [[4, 5], []], "doubles": [[0.25], [float("inf")]], "flags": [[True, True], []],
        "times": [[later], []], "label": ["pushed", "pushed-2"],
    })
    for view in ("part_lists", "flat_lists"):
        store.write_to_offline_store(view, pushed)
    with open_warehouse(settings) as wh:
        partitions = [str(d) for d in wh.partitions("lists_part")]
    # each pushed row went to the partition of its day
    assert f"{later:%Y-%m-%d}" in partitions and f"{later + timedelta(hours=30):%Y-%m-%d}" in partitions
    entity_df = pd.DataFrame({"user_id": [5, 6], "event_timestamp": [later + timedelta(days=2)] * 2})
    got = store.get_historical_features(entity_df=entity_df, full_feature_names=True, features=[
        f"{view}:{f}" for view in ("part_lists", "flat_lists") for f in FEATURES]).to_arrow().to_pylist()
    for row, (_, want) in zip(got, pushed.iterrows(), strict=True):
        for view in ("part_lists", "flat_lists"):
            for f in FEATURES:
                assert _same(row[f"{view}__{f}"], want[f] if not isinstance(want[f], pd.Timestamp) else
                             want[f].to_pydatetime()), (view, f, row)

    # feature logging: appended to a table created on the first write
    service = FeatureService(name="lists_service", features=[store.get_feature_view("flat_lists")[["ints", "label"]]],
                             logging_config=LoggingConfig(destination=HiveLoggingDestination(table="lists_log")))
    store.apply([service])
    service = store.get_feature_service("lists_service")
    assert isinstance(service.logging_config.destination, HiveLoggingDestination)  # through the registry
    from feast.feature_logging import FeatureServiceLoggingSource

    schema = FeatureServiceLoggingSource(service, store.project).get_schema(store.registry)
    n = 3
    logs = pa.table({f.name: _log_values(f, n) for f in schema}, schema=schema)
    store.write_logged_features(logs, service)
    store.write_logged_features(logs, service)
    with open_warehouse(settings) as wh:
        (count,), = wh.scalar_rows(f"SELECT COUNT(*) FROM {wh.qualified('lists_log')}")
    assert count == 2 * n
    source = service.logging_config.destination.to_data_source()
    pulled = store._get_provider().offline_store.pull_all_from_table_or_query(
        config=store.config, data_source=source, join_key_columns=["user_id"],
        feature_name_columns=["flat_lists__ints"], timestamp_field=LOG_TIMESTAMP_FIELD).to_arrow()
    assert pulled.schema.field("flat_lists__ints").type == pa.list_(pa.int32())
    assert sorted(map(tuple, pulled["flat_lists__ints"].to_pylist())) == sorted(
        map(tuple, logs["flat_lists__ints"].to_pylist() * 2))


def _log_values(field: pa.Field, n: int) -> pa.Array:
    if pa.types.is_list(field.type):
        return pa.array([[i, i + 1] for i in range(n)], field.type)
    if pa.types.is_timestamp(field.type):
        return pa.array([T0 + timedelta(seconds=i) for i in range(n)], field.type)
    if pa.types.is_date32(field.type):
        return pa.array([T0.date()] * n, field.type)
    if pa.types.is_integer(field.type):
        return pa.array(range(n), field.type)
    return pa.array([f"v{i}" for i in range(n)], field.type)
