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
    text = write_store_yaml(s).read_text()
    assert "s3cret" not in text
    assert "cache:6380,db=2,password=${MODELSVC_FEATURES__REDIS__PASSWORD}" in text


def test_hive_engine_uses_the_hive_plugin(workdir):
    """Same definitions, Hive sources and store: the data sources are chosen by warehouse.engine."""
    from modelsvc.config import load_settings
    from modelsvc.features import FEATURE_TS_TAG, load_definitions, store_config, write_store_yaml

    s = load_settings(workdir / "configs", warehouse={"engine": "hive"}, hive={"password": "hive-pw"})
    assert store_config(s)["offline_store"]["type"] == "modelsvc.features.hive.HiveOfflineStore"
    assert "hive-pw" not in write_store_yaml(s).read_text()
    views = {o.name: o for o in load_definitions(s) if hasattr(o, "batch_source")}
    src = views["user_offline_features"].batch_source
    assert type(src).__name__ == "HiveSource" and src.tags[FEATURE_TS_TAG] == "offline_feature_ts_us"
    assert views["user_realtime_features"].ttl == timedelta(minutes=30)


def test_missing_repo_is_not_found(workdir):
    from modelsvc.config import load_settings
    from modelsvc.features import materialize

    s = load_settings(workdir / "configs", features={"repo_path": "nowhere"})
    with pytest.raises(NotFoundError, match="feature repo 'nowhere' has no definitions.py"):
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
    assert (root / "feast" / "registry.db").is_file() and (root / "feast" / "online_store.db").is_file()
    assert (root / "feast" / "feature_store.yaml").is_file()

    # same end again: nothing to do, definitions unchanged
    again = materialize(settings, end=end1.to_pydatetime())
    assert again.applied is False
    assert again.rows == 0 and all(v.skipped for v in again.views)

    # new days arrive: the next run continues from end1
    write_offline(root, off)
    end2 = pd.Timestamp(T0 + timedelta(days=6, hours=1))
    r2 = materialize(settings, end=end2.to_pydatetime())
    v2 = {v.view: v for v in r2.views}["user_offline_features"]
    assert v2.start == end1.to_pydatetime()
    assert v2.rows == len(_latest(off, end1, end2))

    users = sorted(off["user_id"].unique().tolist()) + [999]
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
