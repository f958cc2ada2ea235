"""The Feast adapter: generated store config, the repo, materialize into SQLite, online reads."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from modelsvc.errors import NotFoundError
from tests.feature_data import T0, random_case, write_offline, write_realtime

OFFLINE = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]


def test_store_config_local_defaults(settings, workdir):
    from modelsvc.features import store_config

    cfg = store_config(settings)
    feast_dir = workdir / "data" / "feast"
    assert cfg["project"] == "modelsvc"
    assert cfg["registry"]["path"] == str(feast_dir / "registry.db")
    assert cfg["online_store"] == {"type": "sqlite", "path": str(feast_dir / "online_store.db")}
    assert cfg["offline_store"] == {"type": "modelsvc.features.local.LocalDuckDBOfflineStore"}


def test_store_config_redis_keeps_the_password_out_of_the_file(workdir):
    from modelsvc.config import load_settings
    from modelsvc.features import store_config, write_store_yaml

    s = load_settings(workdir / "configs", features={
        "online_store": "redis", "redis": {"host": "cache", "port": 6380, "db": 2, "password": "s3cret"}})
    assert store_config(s)["online_store"] == {"type": "redis",
                                               "connection_string": "cache:6380,db=2,password=s3cret"}
    text = Path(write_store_yaml(s)).read_text()
    assert "s3cret" not in text
    assert "cache:6380,db=2,password=${MODELSVC_FEATURES__REDIS__PASSWORD}" in text


def test_hive_engine_uses_the_hive_plugin(workdir):
    """Same definitions, Hive sources and store: the data sources are chosen by warehouse.engine."""
    from modelsvc.config import load_settings
    from modelsvc.features import FEATURE_TS_TAG, load_definitions, store_config, write_store_yaml

    s = load_settings(workdir / "configs", warehouse={"engine": "hive"}, hive={"password": "hive-pw"})
    assert store_config(s)["offline_store"]["type"] == "modelsvc.features.hive.HiveOfflineStore"
    assert "hive-pw" not in Path(write_store_yaml(s)).read_text()
    views = {o.name: o for o in load_definitions(s) if hasattr(o, "batch_source")}
    src = views["user_offline_features"].batch_source
    assert type(src).__name__ == "HiveSource"
    assert src.tags[FEATURE_TS_TAG] == "offline_feature_ts_us"
    assert views["user_realtime_features"].ttl == timedelta(minutes=30)


def test_missing_repo_is_not_found(workdir):
    from modelsvc.config import load_settings
    from modelsvc.features import materialize

    s = load_settings(workdir / "configs", features={"repo_path": "nowhere"})
    with pytest.raises(NotFoundError, match=r"feature repo 'nowhere' has no definitions.py"):
        materialize(s, end="2026-01-05")


def _latest(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """The row materialize must write per user: latest (event, created) in [start, end]."""
    win = df[(df["event_timestamp"] >= start) & (df["event_timestamp"] <= end)]
    return win.sort_values(["event_timestamp", "created_timestamp"]).groupby("user_id").tail(1).set_index("user_id")


def _norm(v):
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else (v if isinstance(v, str) else float(v))


@pytest.mark.slow
def test_materialize_is_incremental_idempotent_and_matches_offline(settings, workdir):
    from modelsvc.features import get_online_features, materialize

    off, rt, _ = random_case(11, users=15, days=6)
    root = workdir / "data"
    first_days = off[off["event_timestamp"] <= T0 + timedelta(days=4)]
    write_offline(root, first_days)
    write_realtime(root, rt)

    end1 = pd.Timestamp(T0 + timedelta(days=4, hours=2))
    r1 = materialize(settings, end=end1.to_pydatetime())
    assert r1.applied is True
    views = {v.view: v for v in r1.views}
    want1 = _latest(off, end1 - pd.Timedelta(days=7), end1)
    assert views["user_offline_features"].rows == len(want1)
    assert views["user_offline_features"].start == (end1 - pd.Timedelta(days=7)).to_pydatetime()
    want_rt = _latest(rt, end1 - pd.Timedelta(minutes=30), end1)
    assert views["user_realtime_features"].rows == len(want_rt)
    assert (root / "feast" / "registry.db").is_file()
    assert (root / "feast" / "online_store.db").is_file()
    assert (root / "feast" / "feature_store.yaml").is_file()

    # same end again: nothing to do, definitions unchanged
    again = materialize(settings, end=end1.to_pydatetime())
    assert again.applied is False
    assert again.rows == 0
    assert all(v.skipped for v in again.views)

    # new days arrive: the next run continues from end1
    write_offline(root, off)
    end2 = pd.Timestamp(T0 + timedelta(days=6, hours=1))
    r2 = materialize(settings, end=end2.to_pydatetime())
    v2 = {v.view: v for v in r2.views}["user_offline_features"]
    assert v2.start == end1.to_pydatetime()
    assert v2.rows == len(_latest(off, end1, end2))

    users = [*sorted(off["user_id"].unique().tolist()), 999]
    online = get_online_features(settings, users).set_index("user_id")
    # online = the latest offline row per user up to end2 (rows older than end1 - ttl were never loaded)
    want = _latest(off, end1 - pd.Timedelta(days=7), end2)
    for u in users:
        for f in OFFLINE:
            expected = want.loc[u, f] if u in want.index else None
            assert _norm(online.loc[u, f]) == _norm(expected), (u, f)
    assert online.loc[999].isna().all()


@pytest.mark.slow
def test_feast_cli_apply_in_the_repo(workdir):
    """`feast apply` run inside feature_repo/ registers the same objects under <workdir>/data/feast/."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELSVC_")}
    feast = Path(sys.executable).parent / "feast"
    repo = workdir / "feature_repo"
    # Feast's file registry does not create missing parent folders; any modelsvc command creates this one
    (workdir / "data" / "feast").mkdir(parents=True)
    out = subprocess.run([str(feast), "apply"], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert (workdir / "data" / "feast" / "registry.db").is_file()
    # modelsvc sees the registry feast wrote as up to date (same definitions, same settings)
    from modelsvc.config import load_settings
    from modelsvc.features import apply_definitions, feature_store

    s = load_settings(workdir / "configs")
    store = feature_store(s, apply=False)
    assert sorted(v.name for v in store.list_feature_views()) == ["user_offline_features", "user_realtime_features"]
    assert store.get_feature_service("ctr_model_v1") is not None
    assert apply_definitions(s, store) is False


@pytest.mark.slow
def test_unreachable_redis_is_service_unavailable(workdir):
    import socket

    from modelsvc.config import load_settings
    from modelsvc.errors import ServiceUnavailableError
    from modelsvc.features import materialize

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    off, rt, _ = random_case(2, users=3, days=2)
    write_offline(workdir / "data", off)
    write_realtime(workdir / "data", rt)
    s = load_settings(workdir / "configs", features={
        "online_store": "redis", "redis": {"host": "127.0.0.1", "port": port, "password": "pw-never-shown"}})
    with pytest.raises(ServiceUnavailableError, match=f"Redis online store at 127.0.0.1:{port} is unreachable") as e:
        materialize(s, end=T0 + timedelta(days=2))
    assert "pw-never-shown" not in str(e.value)


@pytest.mark.parametrize("type_path", ["modelsvc.feast_local.LocalDuckDBOfflineStore",
                                       "modelsvc.features.local.LocalDuckDBOfflineStore",
                                       "modelsvc.feast_hive.HiveOfflineStore",
                                       "modelsvc.features.hive.HiveOfflineStore"])
def test_old_and_new_offline_store_paths_resolve(tmp_path, type_path):
    """feature_store.yaml files written before the features package name the old class paths: they still load."""
    from feast.repo_config import RepoConfig

    config = RepoConfig(repo_path=tmp_path, project="p", provider="local", registry=str(tmp_path / "r.db"),
                        offline_store={"type": type_path}, entity_key_serialization_version=3)
    store = config.offline_store
    assert type(store).__name__ in {"LocalDuckDBOfflineStoreConfig", "HiveOfflineStoreConfig"}
    from feast.infra.offline_stores.offline_utils import get_offline_store_from_config

    assert type(get_offline_store_from_config(store)).__name__ == type_path.rsplit(".", 1)[1]


def test_hive_store_section_round_trips_the_hive_settings(workdir):
    """The yaml section is the HiveSettings dump; the store rebuilds the same HiveSettings (password expanded)."""
    from modelsvc.config import load_settings
    from modelsvc.features.hive import HiveOfflineStoreConfig, offline_store_config

    s = load_settings(workdir / "configs", warehouse={"engine": "hive"},
                      hive={"host": "h", "port": 10001, "password": "pw", "auth": "LDAP", "username": "u",
                            "scratch_database": "tmp", "query_timeout_s": 12})
    section = offline_store_config(s, for_file=False)
    assert section["type"] == "modelsvc.features.hive.HiveOfflineStore"
    assert HiveOfflineStoreConfig(**section).hive_settings() == s.hive
    written = HiveOfflineStoreConfig(**offline_store_config(s, for_file=True))
    assert written.hive_settings().password is None  # ${MODELSVC_HIVE__PASSWORD} unset: none


def _online_rows(settings) -> dict[str, list[tuple]]:
    """Every row of every table of the SQLite online store, raw (bytes and the stored timestamp text)."""
    import sqlite3

    conn = sqlite3.connect(settings.paths.resolve("feast") / "online_store.db")
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name').fetchall()
                for t in tables}
    finally:
        conn.close()


@pytest.mark.slow
def test_bulk_materialize_writes_what_feast_writes(workdir):
    """The bulk SQLite writer and Feast's own materialization leave byte-identical online stores (first run,
    incremental run, idempotent rerun), and get_online_features reads the same values."""
    from modelsvc.config import load_settings
    from modelsvc.features import get_online_features, materialize

    off, rt, _ = random_case(5, users=25, days=6)
    # edge values: negative and large ints, NaN/null floats, empty and non-ASCII strings
    off.loc[off.index[0], "total_orders_7d"] = -3
    off.loc[off.index[1], "total_orders_7d"] = 2**40
    off.loc[off.index[2], "last_seen_platform"] = ""
    off.loc[off.index[3], "last_seen_platform"] = "wéb-ü"
    roots = {"bulk": workdir / "bulk", "feast": workdir / "feast_path"}
    s = {name: load_settings(workdir / "configs", paths={"root": str(root)}) for name, root in roots.items()}
    for root in roots.values():
        write_offline(root, off[off["event_timestamp"] <= T0 + timedelta(days=4)])
        write_realtime(root, rt)
    end1 = T0 + timedelta(days=4, hours=2)
    r1 = {name: materialize(s[name], end=end1, bulk=name == "bulk") for name in s}
    assert [v.rows for v in r1["bulk"].views] == [v.rows for v in r1["feast"].views]
    assert r1["bulk"].rows > 0
    first = _online_rows(s["bulk"])
    assert first == _online_rows(s["feast"])
    assert sum(len(rows) for rows in first.values()) > 0

    for root in roots.values():
        write_offline(root, off)
    end2 = T0 + timedelta(days=6, hours=1)
    r2 = {name: materialize(s[name], end=end2, bulk=name == "bulk") for name in s}
    assert [v.start for v in r2["bulk"].views] == [v.start for v in r2["feast"].views]  # the same watermark
    assert [v.rows for v in r2["bulk"].views] == [v.rows for v in r2["feast"].views]
    assert _online_rows(s["bulk"]) == _online_rows(s["feast"])
    assert materialize(s["bulk"], end=end2).rows == 0  # idempotent rerun

    users = [*sorted(off["user_id"].unique().tolist()), 999]
    got, want = (get_online_features(s[name], users) for name in ("bulk", "feast"))
    pd.testing.assert_frame_equal(got, want)


def test_bulk_entity_keys_are_feasts():
    """The vectorized entity keys equal Feast's serialize_entity_key (version 3) for int64, int32 and strings."""
    import pyarrow as pa
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    from modelsvc.features.online import _encode, _entity_keys

    table = pa.table({"user_id": pa.array([0, -1, 2**62], pa.int64()), "shop": pa.array([7, -8, 9], pa.int32()),
                      "country": ["de", "fr", "ü"]})
    keys = _entity_keys(table, [("user_id", 4), ("shop", 3), ("country", 2)])
    for i, got in enumerate(keys):
        row = table.slice(i, 1).to_pylist()[0]
        want = serialize_entity_key(EntityKey(
            join_keys=["user_id", "shop", "country"],
            entity_values=[Value(int64_val=row["user_id"]), Value(int32_val=row["shop"]),
                           Value(string_val=row["country"])]), entity_key_serialization_version=3)
        assert got == want
    blobs, texts = _encode(pa.array([-5, None, 300], pa.int32()), "Int32")
    assert blobs == [Value(int32_val=-5).SerializeToString(), b"", Value(int32_val=300).SerializeToString()]
    assert texts == ["-5", None, "300"]
    blobs, texts = _encode(pa.array([0.1, None, float("nan")], pa.float32()), "Float32")
    assert blobs[0] == Value(float_val=0.1).SerializeToString()
    assert blobs[1:] == [b"", b""]
    assert texts[0] == str(Value(float_val=0.1).float_val)
    blobs, _ = _encode(pa.array([True, False, None]), "Bool")
    assert blobs == [Value(bool_val=True).SerializeToString(), Value(bool_val=False).SerializeToString(), b""]
    # every varint length, both ends of int64 and int32, and a chunked column; framed for Redis or not
    edges = [0, 1, -1, 127, 128, 2**14, -(2**31), 2**31 - 1, 2**63 - 1, -(2**63)]
    ints = edges + [(1 << (7 * k)) - d for k in range(1, 10) for d in (0, 1) if (1 << (7 * k)) - d < 2**63] + [None]
    for dtype, field, arrow in (("Int64", "int64_val", pa.int64()), ("Int32", "int32_val", pa.int32())):
        values = [v for v in ints if v is None or -(2**31) <= v < 2**31] if dtype == "Int32" else ints
        column = pa.chunked_array([pa.array(values[:5], arrow), pa.array(values[5:], arrow)])
        want = [b"" if v is None else Value(**{field: v}).SerializeToString() for v in values]
        assert _encode(column, dtype) == (want, [None if v is None else str(v) for v in values])
        assert _encode(column, dtype, texts=False, frame=True) == (
            [b"$%d\r\n%b\r\n" % (len(w), w) for w in want], None)
    strings = ["web", None, "ios", "wéb", "", "web", "x" * 300]
    want = [b"" if v is None else Value(string_val=v).SerializeToString() for v in strings]
    for column in (pa.array(strings), pa.chunked_array([pa.array(strings[:3]), pa.array(strings[3:])]),
                   pa.array(strings).dictionary_encode()):
        assert _encode(column, "String") == (want, strings)
        assert _encode(column, "String", texts=False, frame=True)[0] == [b"$%d\r\n%b\r\n" % (len(w), w)
                                                                         for w in want]


def test_bulk_sqlite_insert_is_the_same_with_apsw_and_sqlite3(tmp_path, monkeypatch):
    """The bulk writer inserts through apsw when installed and the standard sqlite3 module otherwise: the same
    upsert, the same file content."""
    import sqlite3

    pytest.importorskip("apsw")
    from modelsvc.features.online import _executemany

    ddl = ("CREATE TABLE t (entity_key BLOB, feature_name TEXT, value BLOB, value_text TEXT, event_ts timestamp, "
           "PRIMARY KEY(entity_key, feature_name))")
    sql = ("INSERT INTO t VALUES (?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
           "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts")
    rows = [(b"\x01\x00k", "a", b"\x20\x05", "5", 1_700_000_000), (b"\x01\x00k", "b", b"", None, None),
            (b"\x02", "a", b"\x12\x03w\xc3\xa9", "wé", 1), (b"\x01\x00k", "a", b"\x20\x06", "6", 2)]
    got = {}
    for lib in ("apsw", "sqlite3"):
        path = tmp_path / f"{lib}.db"
        with sqlite3.connect(path) as conn:
            conn.execute(ddl)
        conn.close()
        with monkeypatch.context() as m:
            if lib == "sqlite3":
                m.setitem(sys.modules, "apsw", None)  # import apsw fails: the fallback
            _executemany(path, sql, iter(rows))
        conn = sqlite3.connect(path)
        got[lib] = conn.execute("SELECT * FROM t ORDER BY entity_key, feature_name").fetchall()
        conn.close()
    assert got["apsw"] == got["sqlite3"] == [(b"\x01\x00k", "a", b"\x20\x06", "6", 2),
                                             (b"\x01\x00k", "b", b"", None, None),
                                             (b"\x02", "a", b"\x12\x03w\xc3\xa9", "wé", 1)]
