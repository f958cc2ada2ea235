"""Materialize into the SQLite online store: entity rows written per second, modelsvc's bulk writer against
Feast's own materialization on the same rows, in the same run.

    python benchmarks/materialize.py                # 100k users: 100k rows per view, 700k snapshot rows read
    python benchmarks/materialize.py --rows 20000   # scaled down
    python benchmarks/materialize.py --only bulk    # skip Feast's path
    python benchmarks/materialize.py --redis 127.0.0.1:6379   # the Redis online store (databases 14 and 15)

Every user has 7 daily snapshots and one realtime window inside the ttl, so a first materialization writes
``rows`` entity rows for each of the two feature views. Each path gets its own copy of the state (registry,
online store) over the same warehouse tables; the two online stores are compared row by row at the end.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
from pit_join import REPO, T0, _us, _write  # the script folder is on sys.path


def make_data(root: Path, users: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    t0 = np.datetime64(T0.tz_convert(None).to_datetime64(), "us")
    day = np.timedelta64(86400 * 10**6, "us")
    u = np.tile(np.arange(users, dtype="int64"), 7)
    ts = t0 + np.repeat(np.arange(1, 8), users) * day
    _write(root, "user_features_precomputed", pa.table({
        "user_id": u, "event_timestamp": _us(ts), "created_timestamp": _us(ts),
        "total_orders_7d": rng.integers(0, 30, len(u)), "avg_purchase_value_30d": rng.uniform(1, 200, len(u)),
        "last_seen_platform": np.array(["web", "ios", "android"])[rng.integers(0, 3, len(u))],
        "ds": (ts - day).astype("datetime64[D]").astype(str)}))
    rts = np.full(users, t0 + 7 * day - np.timedelta64(600 * 10**6, "us"))
    _write(root, "user_realtime_features", pa.table({
        "user_id": np.arange(users, dtype="int64"), "event_timestamp": _us(rts), "created_timestamp": _us(rts),
        "current_page_views_10m": rng.integers(0, 60, users), "ds": rts.astype("datetime64[D]").astype(str)}))


def _online_rows(path: Path) -> list[tuple]:
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        return [row for t in tables for row in conn.execute(f'SELECT * FROM "{t}" ORDER BY entity_key, feature_name')]
    finally:
        conn.close()


def _redis_rows(address: str) -> bool:
    import redis

    host, port = address.rsplit(":", 1)
    dumps = []
    for db in (14, 15):
        client = redis.Redis(host=host, port=int(port), db=db)
        dumps.append({k: client.hgetall(k) for k in client.scan_iter(count=10_000)})
        client.close()
    return dumps[0] == dumps[1]


def _redis_cpu(address: str) -> float:
    """CPU seconds the Redis server has used so far (user + system): the commands run there."""
    import redis

    host, port = address.rsplit(":", 1)
    client = redis.Redis(host=host, port=int(port))
    info = client.info("cpu")
    client.close()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=100_000, help="users (= entity rows written per view)")
    ap.add_argument("--only", choices=["bulk", "feast"], help="run one path only")
    ap.add_argument("--redis", metavar="HOST:PORT", help="use this Redis (flushes databases 14 and 15)")
    args = ap.parse_args()

    from modelsvc.config import load_settings
    from modelsvc.features import feature_store, materialize

    root = Path(tempfile.mkdtemp(prefix="modelsvc-mat-"))
    try:
        make_data(root, args.rows)
        end = (T0 + np.timedelta64(7, "D")).to_pydatetime()
        import ibis

        ibis.get_backend()  # load ibis's DuckDB backend (a one-time 1 s import) before either path is timed
        seconds, cpu = {}, {}
        paths = [args.only] if args.only else ["bulk", "feast"]
        for path in paths:
            features: dict = {"repo_path": str(REPO / "feature_repo")}
            if args.redis:
                import redis

                host, port = args.redis.rsplit(":", 1)
                db = 14 if path == "bulk" else 15
                redis.Redis(host=host, port=int(port), db=db).flushdb()
                features.update(online_store="redis", redis={"host": host, "port": int(port), "db": db})
            settings = load_settings(REPO / "configs", paths={"root": str(root), "feast": f"feast-{path}"},
                                     features=features)
            feature_store(settings)  # apply outside the timing
            server = _redis_cpu(args.redis) if args.redis else 0.0
            t, c = time.perf_counter(), time.process_time()
            report = materialize(settings, end=end, bulk=path == "bulk")
            seconds[path] = total = time.perf_counter() - t
            client = time.process_time() - c
            server = (_redis_cpu(args.redis) - server) if args.redis else 0.0
            cpu[path] = client + server
            for v in report.views:
                print(f"{path:5s} {v.view:24s} {v.rows:>9,} rows  {v.seconds:6.2f}s  {v.rows / v.seconds:9,.0f} rows/s")
            print(f"{path:5s} {'total':24s} {report.rows:>9,} rows  {total:6.2f}s  {report.rows / total:9,.0f} rows/s "
                  f"({report.online_store}); CPU {cpu[path]:.2f}s"
                  f"{f' ({client:.2f} here + {server:.2f} the Redis server)' if args.redis else ''}; "
                  f"load {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
            t = time.perf_counter()
            again = materialize(settings, end=end, bulk=path == "bulk")
            print(f"{path:5s} rerun with the same end: {again.rows} rows in {time.perf_counter() - t:.2f}s")
        if len(seconds) == 2:
            same = _redis_rows(args.redis) if args.redis else _online_rows(
                root / "feast-bulk" / "online_store.db") == _online_rows(root / "feast-feast" / "online_store.db")
            print(f"bulk is {seconds['feast'] / seconds['bulk']:.1f}x Feast's materialize in wall time, "
                  f"{cpu['feast'] / cpu['bulk']:.1f}x in CPU time; online stores identical: {same}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
