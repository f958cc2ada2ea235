"""Hive backfill: an N-day ETL on a HiveServer2 endpoint, per-day statements vs chunked dynamic-partition inserts.

Generates the demo's raw events (--users users over lookback + --days days), uploads them to a fresh database,
then runs ``run_etl`` over the last --days days twice, in the same process, against the same server, each run
starting without feature tables:

* ``per-day``  ``hive.backfill_chunk_days: 1``: two ``INSERT OVERWRITE … PARTITION (ds='…') SELECT …`` per day,
               each rereading the 30-day lookback (modelsvc before the chunked path);
* ``chunked``  the default ``hive.backfill_chunk_days`` (31): one CTAS stage per table and chunk, then one
               dynamic-partition ``INSERT OVERWRITE … PARTITION (ds)`` (+ one static multi-insert for empty days).

The feature tables of each run are read back and compared row for row (``created_timestamp`` aside: it is the run's
own clock) and partition for partition. Without --host it starts a throw-away Spark Thrift server exactly as the
test fixture does (tests/fixtures/hive.py: ``local[2]``, needs Java 17 and pyspark).

    python benchmarks/hive_backfill.py --days 30 --users 20
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.fixtures.hive: the Thrift server command line


def _server(workdir: Path):
    """Start the fixture's Spark Thrift server; returns (host, port, stop)."""
    from tests.fixtures._service import free_port, start, stop, wait_until
    from tests.fixtures.hive import _pyspark_home, _select_one, _spark_submit, thrift_server_command

    spark_submit = _spark_submit()
    if spark_submit is None:
        raise SystemExit("pyspark's spark-submit is not installed beside this python (pip install 'modelsvc[dev]')")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SPARK_", "PYSPARK_", "HADOOP_CONF"))}
    env.update({"SPARK_HOME": str(_pyspark_home()), "SPARK_LOCAL_IP": "127.0.0.1", "TZ": "UTC",
                "SPARK_LOG_DIR": str(workdir / "logs"), "SPARK_PID_DIR": str(workdir)})
    log = workdir / "thriftserver.log"
    proc = start(thrift_server_command(spark_submit, port, workdir), log, cwd=workdir, env=env)
    wait_until(lambda: _select_one("127.0.0.1", port), timeout=300, what="Spark Thrift server", proc=proc, log=log,
               interval=1.0)
    return "127.0.0.1", port, lambda: stop(proc, grace=15)


def _rows(table) -> list[tuple]:
    rows = [tuple(v for k, v in r.items() if k != "created_timestamp") for r in table.to_pylist()]
    return sorted(rows, key=repr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=30, help="days backfilled (default 30)")
    ap.add_argument("--users", type=int, default=20, help="simulated users (default 20: ~8k events over 60 days)")
    ap.add_argument("--host", help="an existing HiveServer2 (default: start a Spark Thrift server)")
    ap.add_argument("--port", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    logging.getLogger("thrift.transport.TSocket").setLevel(logging.CRITICAL)  # "could not connect" while it starts

    from modelsvc.config import load_settings
    from modelsvc.demo import simulate_events
    from modelsvc.etl import run_etl
    from modelsvc.warehouse import open_warehouse
    from modelsvc.warehouse.hive import HiveWarehouse

    with tempfile.TemporaryDirectory(prefix="modelsvc-hive-backfill-") as tmp:
        root = Path(tmp)
        stop = None
        t0 = time.perf_counter()
        if args.host:
            host, port = args.host, args.port
        else:
            host, port, stop = _server(root)
        print(f"server {host}:{port} ready in {time.perf_counter() - t0:.1f} s", flush=True)
        try:
            base = {"warehouse": {"engine": "hive"},
                    "hive": {"host": host, "port": port, "auth": "NONE", "username": "modelsvc"}}
            lookback = load_settings(REPO / "configs").etl.lookback_days
            end = date(2024, 6, 30)
            first = end - timedelta(days=args.days - 1)
            raw = simulate_events(users=args.users, days=args.days + lookback, start_date=first -
                                  timedelta(days=lookback), seed=args.seed)
            hive = {**base["hive"], "database": f"bench_backfill_{os.getpid()}"}
            with HiveWarehouse(None, hive=load_settings(None, **base).hive) as wh:
                wh.execute(f"CREATE DATABASE IF NOT EXISTS `{hive['database']}`")
            # one database, one raw upload; each run starts without feature tables
            runs = {"chunked": None, "per-day": 1}  # chunked first: any warm-up left favours per-day
            settings = {name: load_settings(REPO / "configs", paths={"root": str(root / name)},
                                            warehouse=base["warehouse"],
                                            hive={**hive, **({} if chunk is None else {"backfill_chunk_days": chunk})})
                        for name, chunk in runs.items()}
            with open_warehouse(settings["chunked"]) as wh:
                wh.write_partitions(settings["chunked"].tables.raw_events, raw)
            print(f"{raw.num_rows:,} raw events, {args.users} users, backfill {first}..{end} ({args.days} days), "
                  f"lookback {lookback} days", flush=True)
            seconds, got = {}, {}
            tables = ("user_features", "realtime_features")
            for name, s in settings.items():
                with open_warehouse(s) as wh:
                    for table in tables:
                        wh.drop_table(getattr(s.tables, table))
                report = run_etl(s, start_date=first, end_date=end)
                seconds[name] = report.seconds
                print(f"{name:8s} {report.seconds:8.1f} s  rows {report.rows_written}", flush=True)
                with open_warehouse(s) as wh:
                    got[name] = {t: (_rows(wh.read(getattr(s.tables, t))), wh.partitions(getattr(s.tables, t)))
                                 for t in tables}
            same = True
            for table in tables:
                equal = got["per-day"][table] == got["chunked"][table]
                same &= equal
                print(f"{table}: {len(got['chunked'][table][0]):,} rows, {len(got['chunked'][table][1])} "
                      f"partitions, {'identical' if equal else 'DIFFERENT'}", flush=True)
            print(f"speed-up {seconds['per-day'] / seconds['chunked']:.1f}x "
                  f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
            if not same:
                raise SystemExit("the chunked backfill wrote different tables")
        finally:
            if stop is not None:
                stop()


if __name__ == "__main__":
    main()
