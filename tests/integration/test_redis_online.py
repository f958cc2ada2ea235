"""Feast's Redis online store, selected by configuration, against a real ``redis-server`` (session fixture).

materialize → online values equal the latest offline values per user; an older event never overwrites a newer
one; an unreachable Redis is exit 69 through the CLI, without the password.
"""

from __future__ import annotations

import socket
from datetime import timedelta

import pandas as pd
import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.config import load_settings
from tests.feature_data import T0, random_case, write_offline, write_realtime

pytestmark = [pytest.mark.integration, pytest.mark.redis, pytest.mark.slow]

OFFLINE = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]
REALTIME = ["current_page_views_10m"]


def _redis_settings(workdir, redis_server, *, db: int, feast_dir: str = "feast"):
    overrides = redis_server.settings_overrides()
    overrides["features"]["redis"]["db"] = db
    return load_settings(workdir / "configs", paths={"feast": feast_dir}, **overrides)


def _flush(redis_server, db: int) -> None:
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db, socket_timeout=5)
    client.flushdb()
    client.close()


def _latest(df: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.DataFrame:
    """What the online store must hold per user: the latest (event, created) row in [start, end]."""
    win = df[(df["event_timestamp"] >= start) & (df["event_timestamp"] <= end)]
    return win.sort_values(["event_timestamp", "created_timestamp"]).groupby("user_id").tail(1).set_index("user_id")


def _norm(v):
    return None if v is None or (not isinstance(v, str) and pd.isna(v)) else (v if isinstance(v, str) else float(v))


def _assert_online_matches(online: pd.DataFrame, want: pd.DataFrame, users: list[int], features: list[str]) -> None:
    for u in users:
        for f in features:
            expected = want.loc[u, f] if u in want.index else None
            assert _norm(online.loc[u, f]) == _norm(expected), (u, f)


def _redis_keys(redis_server, db: int) -> int:
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db, socket_timeout=5)
    try:
        return int(client.dbsize())
    finally:
        client.close()


def test_materialize_into_redis_matches_latest_offline_values(workdir, redis_server):
    db = 1
    _flush(redis_server, db)
    settings = _redis_settings(workdir, redis_server, db=db)
    off, rt, _ = random_case(21, users=12, days=4)
    root = workdir / "data"
    write_offline(root, off[off["event_timestamp"] <= T0 + timedelta(days=3)])
    write_realtime(root, rt)

    from modelsvc.features import get_online_features, materialize

    end1 = pd.Timestamp(T0 + timedelta(days=3, hours=2))
    r1 = materialize(settings, end=end1.to_pydatetime())
    assert r1.online_store == "redis"
    assert r1.applied is True
    # the rows really went to this Redis (no SQLite online store was written)
    assert _redis_keys(redis_server, db) > 0
    assert not (root / "feast" / "online_store.db").exists()

    # a later day arrives: incremental run, then online == latest offline row per user up to end2
    write_offline(root, off)
    end2 = pd.Timestamp(T0 + timedelta(days=4, hours=1))
    r2 = materialize(settings, end=end2.to_pydatetime())
    v2 = {v.view: v for v in r2.views}["user_offline_features"]
    assert v2.start == end1.to_pydatetime()
    assert v2.rows == len(_latest(off, end1, end2))

    users = [*sorted(off["user_id"].unique().tolist()), 999]
    online = get_online_features(settings, users).set_index("user_id")
    _assert_online_matches(online, _latest(off, end1 - pd.Timedelta(days=7), end2), users, OFFLINE)
    rt_users = sorted(rt["user_id"].unique().tolist())
    # realtime: the first run loaded [end1 - 30 min, end1], the second (end1, end2]
    want_rt = _latest(rt, end1 - pd.Timedelta(minutes=30), end2)
    assert len(want_rt) > 0
    _assert_online_matches(online, want_rt, rt_users, REALTIME)
    assert online.loc[999, OFFLINE + REALTIME].isna().all()


def test_an_older_event_never_overwrites_a_newer_one_in_redis(workdir, redis_server):
    """Materialize a later window first (registry A), then an earlier one into the same Redis (registry B):
    the online values stay those of the later window."""
    db = 2
    _flush(redis_server, db)
    off, rt, _ = random_case(22, users=10, days=4)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    late = _redis_settings(workdir, redis_server, db=db, feast_dir="feast_late")
    early = _redis_settings(workdir, redis_server, db=db, feast_dir="feast_early")

    from modelsvc.features import get_online_features, materialize

    end_late = pd.Timestamp(T0 + timedelta(days=4, hours=1))
    end_early = pd.Timestamp(T0 + timedelta(days=2, hours=1))
    assert materialize(late, end=end_late.to_pydatetime()).rows > 0
    r_early = materialize(early, end=end_early.to_pydatetime())
    # the earlier window did carry rows for users that the later window has newer rows for
    early_off = _latest(off, end_early - pd.Timedelta(days=7), end_early)
    late_off = _latest(off, end_late - pd.Timedelta(days=7), end_late)
    stale = [u for u in early_off.index if u in late_off.index
             and early_off.loc[u, "event_timestamp"] < late_off.loc[u, "event_timestamp"]
             and any(_norm(early_off.loc[u, f]) != _norm(late_off.loc[u, f]) for f in OFFLINE)]
    assert {v.view: v for v in r_early.views}["user_offline_features"].rows == len(early_off)
    assert len(stale) >= 3, "the case must have users whose older row differs from the newer one"

    users = sorted(off["user_id"].unique().tolist())
    for s in (late, early):  # whichever registry reads it, Redis holds the newest row per user
        online = get_online_features(s, users).set_index("user_id")
        _assert_online_matches(online, late_off, users, OFFLINE)


def _dump(redis_server, db: int) -> dict[bytes, dict[bytes, bytes]]:
    """Every hash of a Redis database, field by field, and no key with a ttl."""
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db, socket_timeout=5)
    try:
        keys = sorted(client.keys("*"))
        assert all(client.ttl(k) == -1 for k in keys)
        return {k: client.hgetall(k) for k in keys}
    finally:
        client.close()


def test_bulk_materialize_writes_what_feast_writes_in_redis(workdir, redis_server):
    """The bulk Redis writer and Feast's own materialization leave identical databases (first run, incremental
    run, and an older window afterwards that must not overwrite anything)."""
    from modelsvc.features import get_online_features, materialize

    dbs = {"bulk": 3, "feast": 4}
    for db in dbs.values():
        _flush(redis_server, db)
    off, rt, _ = random_case(23, users=20, days=5)
    off.loc[off.index[0], "last_seen_platform"] = "wéb"
    root = workdir / "data"
    write_offline(root, off[off["event_timestamp"] <= T0 + timedelta(days=3)])
    write_realtime(root, rt)
    s = {name: _redis_settings(workdir, redis_server, db=db, feast_dir=f"feast_{name}") for name, db in dbs.items()}
    end1, end2 = T0 + timedelta(days=3, hours=2), T0 + timedelta(days=5, hours=1)
    r1 = {name: materialize(s[name], end=end1, bulk=name == "bulk") for name in s}
    assert r1["bulk"].rows == r1["feast"].rows > 0
    assert _dump(redis_server, dbs["bulk"]) == _dump(redis_server, dbs["feast"])
    write_offline(root, off)
    for name in s:
        materialize(s[name], end=end2, bulk=name == "bulk")
    late = _dump(redis_server, dbs["bulk"])
    assert late == _dump(redis_server, dbs["feast"])
    assert len(late) > 0
    # an earlier window through a fresh registry: older rows are skipped by both writers
    early = {name: _redis_settings(workdir, redis_server, db=db, feast_dir=f"feast_early_{name}")
             for name, db in dbs.items()}
    for name in early:
        materialize(early[name], end=T0 + timedelta(days=2), bulk=name == "bulk")
    assert _dump(redis_server, dbs["bulk"]) == _dump(redis_server, dbs["feast"]) == late
    users = [*sorted(off["user_id"].unique().tolist()), 999]
    pd.testing.assert_frame_equal(get_online_features(s["bulk"], users), get_online_features(s["feast"], users))


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_materialize_cli_with_unreachable_redis_exits_69_without_the_password(workdir, monkeypatch, caplog):
    off, rt, _ = random_case(23, users=3, days=2)
    write_offline(workdir / "data", off)
    write_realtime(workdir / "data", rt)
    port = _closed_port()
    secret = "redis-pw-never-shown"
    monkeypatch.setenv("MODELSVC_FEATURES__ONLINE_STORE", "redis")
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__HOST", "127.0.0.1")
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__PORT", str(port))
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__PASSWORD", secret)
    caplog.set_level("DEBUG")
    result = CliRunner().invoke(app, ["materialize", "--end-date", "2026-01-03", "--json"])
    assert result.exit_code == 69, result.output
    assert result.stderr.splitlines()[0] == f"Error: Redis online store at 127.0.0.1:{port} is unreachable " \
                                            "(ConnectionError)"
    assert result.stdout == ""
    assert secret not in result.output
    assert secret not in caplog.text


def test_bulk_redis_writer_sets_feasts_ttl_and_names_a_refused_write(workdir, redis_server):
    """With Feast's ``key_ttl_seconds`` the bulk writer gives every key that ttl, as Feast does. A key holding
    another type is refused by Redis: a StorageError (74) naming Redis's reply, and the pooled connection works
    for the next write."""
    import pyarrow as pa
    import redis
    from feast.infra.online_stores.helpers import _mmh3
    from feast.protos.feast.types.Value_pb2 import Value

    from modelsvc.errors import StorageError
    from modelsvc.features import feature_store
    from modelsvc.features.online import write_redis
    from modelsvc.features.store import _online_store

    db = 5
    _flush(redis_server, db)
    s = _redis_settings(workdir, redis_server, db=db, feast_dir="feast_ttl")
    store = feature_store(s)
    view = store.get_feature_view("user_realtime_features")
    online = store.config.online_store
    online.key_ttl_seconds = 3600

    def rows(minutes: int) -> pa.Table:
        ts = pa.array([T0 + timedelta(minutes=minutes)] * 3, pa.timestamp("us", tz="UTC"))
        columns = {"user_id": pa.array([1, 2, 3], pa.int64())}
        columns.update({f.name: pa.array([minutes] * 3, pa.int64()) for f in view.features})
        columns[view.batch_source.timestamp_field] = ts
        return pa.table(columns)

    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=db, socket_timeout=5)
    try:
        assert write_redis(store, view, rows(0)) == 3
        keys = sorted(client.keys("*"))
        assert len(keys) == 3
        assert all(3500 < client.ttl(k) <= 3600 for k in keys)
        client.delete(keys[1])
        client.set(keys[1], b"not a hash")
        online.skip_dedup = True  # no read first: the HSET itself is refused
        with pytest.raises(StorageError, match=r"refused a command: WRONGTYPE") as err, _online_store(s):
            write_redis(store, view, rows(5), chunk=1)
        assert err.value.exit_code == 74
        online.skip_dedup = False
        client.delete(keys[1])
        assert write_redis(store, view, rows(10)) == 3
        field = _mmh3("user_realtime_features:current_page_views_10m")
        assert [client.hget(k, field) for k in keys] == [Value(int64_val=10).SerializeToString()] * 3
        assert all(3500 < client.ttl(k) <= 3600 for k in keys)
    finally:
        client.close()
