"""Feature-ETL throughput: modelsvc's ETL against other ways of computing the same features.

Generates N raw events (the demo's simulator, over --days days), writes them as the raw table of a temporary
local warehouse, then computes both feature tables for every day with:

* ``modelsvc etl``      run_etl end to end: contract check, SQL (per-user per-day partial aggregates rolled over
                        the windows), atomic partition writes
* ``modelsvc sql``      the same SQL, compute only (no writes), for a like-for-like comparison
* ``duckdb naive``      one SQL joining every event to every snapshot day whose window holds it (30x fan-out)
* ``polars``            partial aggregates in Polars (lazy, parquet scan)
* ``pandas``            partial aggregates in pandas, on a sample of users (it is slow); its rate is per event
                        of the sample

Every alternative's rows are compared with modelsvc's (integers and strings exactly, averages to 1e-9
relative). Each engine runs --repeat times (default 3) and its fastest run is reported. Rates are raw events
read per second; ratios are against the baseline (duckdb naive) measured in the
same run. CPU seconds (all threads of the process) are printed too: on a shared machine they say more than the
wall clock (events/cpu-s x cores = the rate on an idle machine if the work parallelises perfectly).

    python benchmarks/etl_throughput.py --events 10000000
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

EVENTS_PER_USER_DAY = 6.6  # what the demo simulator produces on average


def _settings(root: Path, threads: int | None):
    from modelsvc.config import load_settings

    return load_settings(None, paths={"root": str(root)}, warehouse={"threads": threads})


def _files(root: Path, table: str) -> list[str]:
    return sorted(str(p) for p in (root / "warehouse" / table).glob("ds=*/*.parquet"))


def generate(root: Path, events: int, days: int, start: date, seed: int, threads: int | None) -> int:
    from modelsvc.demo import simulate_events
    from modelsvc.warehouse import open_warehouse

    users = max(1, math.ceil(events / (EVENTS_PER_USER_DAY * days)))
    table = simulate_events(users=users, days=days, start_date=start, seed=seed)
    table = table.slice(0, min(events, table.num_rows))
    with open_warehouse(_settings(root, threads)) as wh:
        wh.write_partitions("raw_events", table)
    return table.num_rows


# -- the alternatives ------------------------------------------------------------------------------------------

def duckdb_naive(root: Path, days: list[date], threads: int | None):
    import duckdb

    from modelsvc.etl import DUCKDB, _day_rows

    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {threads}")
    files = _files(root, "raw_events")
    listing = "[" + ", ".join(f"'{f}'" for f in files) + "]"
    user_sql = f"""
    WITH snap AS ({_day_rows(days, with_snapshot=DUCKDB)}),
    ev AS (SELECT * FROM read_parquet({listing}, hive_partitioning = true, hive_types = {{'ds': VARCHAR}}))
    SELECT e.user_id, s.ds,
           count(*) FILTER (WHERE e.event_type = 'order' AND e.event_timestamp >= s.snapshot_ts - INTERVAL 7 DAY)
             AS total_orders_7d,
           avg(e.purchase_value) FILTER (WHERE e.event_type = 'order') AS avg_purchase_value_30d,
           arg_max(e.platform, CASE WHEN e.platform IS NOT NULL THEN {{'t': e.event_timestamp, 'e': e.event_id}}
                   END) AS last_seen_platform
    FROM ev e JOIN snap s ON e.event_timestamp >= s.snapshot_ts - INTERVAL 30 DAY
                         AND e.event_timestamp < s.snapshot_ts
    GROUP BY e.user_id, s.ds
    """
    rt_sql = f"""
    SELECT user_id, time_bucket(INTERVAL 10 MINUTE, event_timestamp) + INTERVAL 10 MINUTE AS event_timestamp,
           count(*) AS current_page_views_10m, ds
    FROM read_parquet({listing}, hive_partitioning = true, hive_types = {{'ds': VARCHAR}})
    WHERE event_type = 'page_view' AND ds >= '{days[0]}' AND ds <= '{days[-1]}'
    GROUP BY ALL
    """
    users = con.sql(user_sql).to_arrow_table()
    realtime = con.sql(rt_sql).to_arrow_table()
    con.close()
    return users, realtime


def polars_features(root: Path, days: list[date], lookback: int = 30):
    import polars as pl

    first = (days[0] - date(1970, 1, 1)).days
    last = (days[-1] - date(1970, 1, 1)).days
    day_us = 86_400_000_000
    ev = (pl.scan_parquet(_files(root, "raw_events"))
          .with_columns(ts=pl.col("event_timestamp").dt.epoch("us"))
          .with_columns(day=pl.col("ts") // day_us)
          .filter(pl.col("day").is_between(first - lookback + 1, last)))
    is_order = pl.col("event_type") == "order"
    daily = ev.group_by("user_id", "day").agg(
        n_orders=is_order.sum(),
        pv_sum=pl.col("purchase_value").filter(is_order).sum(),
        pv_n=pl.col("purchase_value").filter(is_order).count(),
        platform=pl.col("platform").sort_by("ts", "event_id").drop_nulls().last(),
    )
    offsets = pl.LazyFrame({"k": list(range(lookback))}, schema={"k": pl.Int64})
    users = (daily.join(offsets, how="cross")
             .with_columns(snap=pl.col("day") + pl.col("k"))
             .filter(pl.col("snap").is_between(first, last))
             .group_by("user_id", "snap")
             .agg(total_orders_7d=pl.col("n_orders").filter(pl.col("k") < 7).sum(),
                  pv_sum=pl.col("pv_sum").sum(), pv_n=pl.col("pv_n").sum(),
                  last_seen_platform=pl.col("platform").sort_by("day").drop_nulls().last())
             .with_columns(avg_purchase_value_30d=pl.when(pl.col("pv_n") > 0)
                           .then(pl.col("pv_sum") / pl.col("pv_n")))
             .select("user_id", "snap", "total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"))
    realtime = (ev.filter((pl.col("event_type") == "page_view") & (pl.col("day") >= first))
                .group_by("user_id", bucket=pl.col("ts") // 600_000_000)
                .agg(current_page_views_10m=pl.len()))
    u, r = pl.collect_all([users, realtime])
    return u, r


def pandas_features(root: Path, days: list[date], users_kept: set[int], lookback: int = 30):
    import pandas as pd
    import pyarrow.parquet as pq

    first = (days[0] - date(1970, 1, 1)).days
    last = (days[-1] - date(1970, 1, 1)).days
    frames = [pq.read_table(f, filters=[("user_id", "in", users_kept)]).to_pandas() for f in _files(root, "raw_events")]
    ev = pd.concat(frames, ignore_index=True)
    n_events = len(ev)
    t0, c0 = time.perf_counter(), time.process_time()
    ev["ts"] = ev["event_timestamp"].astype("int64") // 1000 if ev["event_timestamp"].dt.unit == "ns" else \
        ev["event_timestamp"].astype("int64")
    ev["day"] = ev["ts"] // 86_400_000_000
    ev = ev[(ev["day"] >= first - lookback + 1) & (ev["day"] <= last)]
    ev["is_order"] = ev["event_type"] == "order"
    ev["pv"] = ev["purchase_value"].where(ev["is_order"])
    g = ev.groupby(["user_id", "day"])
    daily = pd.DataFrame({"n_orders": g["is_order"].sum(), "pv_sum": g["pv"].sum(), "pv_n": g["pv"].count()})
    latest = (ev[ev["platform"].notna()].sort_values(["ts", "event_id"])
              .groupby(["user_id", "day"])["platform"].last())
    daily = daily.join(latest).reset_index()
    parts = []
    for k in range(lookback):
        p = daily.assign(snap=daily["day"] + k, k=k)
        parts.append(p[(p["snap"] >= first) & (p["snap"] <= last)])
    fan = pd.concat(parts, ignore_index=True)
    fan["o7"] = fan["n_orders"].where(fan["k"] < 7, 0)
    g = fan.groupby(["user_id", "snap"])
    users = pd.DataFrame({"total_orders_7d": g["o7"].sum(), "pv_sum": g["pv_sum"].sum(), "pv_n": g["pv_n"].sum()})
    users["avg_purchase_value_30d"] = (users["pv_sum"] / users["pv_n"]).where(users["pv_n"] > 0)
    plat = fan[fan["platform"].notna()].sort_values("day").groupby(["user_id", "snap"])["platform"].last()
    users = users.join(plat.rename("last_seen_platform")).reset_index()
    pv = ev[(ev["event_type"] == "page_view") & (ev["day"] >= first)]
    realtime = pv.groupby([pv["user_id"], (pv["ts"] // 600_000_000).rename("bucket")]).size()
    realtime = realtime.rename("current_page_views_10m")
    return users, realtime.reset_index(), n_events, time.perf_counter() - t0, time.process_time() - c0


# -- comparison ------------------------------------------------------------------------------------------------

def _canon_users(df, day_col: str):
    """pandas frame sorted by (user_id, day number) with the four feature columns."""
    import pandas as pd

    df = df.copy()
    if day_col == "ds":
        df["snap"] = (pd.to_datetime(df["ds"].astype(str)) - pd.Timestamp("1970-01-01")).dt.days  # ds: str or ENUM
    df = df[["user_id", "snap", "total_orders_7d", "avg_purchase_value_30d", "last_seen_platform"]]
    df["total_orders_7d"] = df["total_orders_7d"].astype("int64")
    return df.sort_values(["user_id", "snap"]).reset_index(drop=True)


def _same(a, b) -> bool:
    import numpy as np

    if len(a) != len(b):
        return False
    for col in ("user_id", "snap", "total_orders_7d"):
        if not (a[col].to_numpy() == b[col].to_numpy()).all():
            return False
    if not (a["last_seen_platform"].fillna("<null>").to_numpy() == b["last_seen_platform"].fillna("<null>")
            .to_numpy()).all():
        return False
    x = a["avg_purchase_value_30d"].to_numpy(dtype=float)
    y = b["avg_purchase_value_30d"].to_numpy(dtype=float)
    return bool(np.array_equal(np.isnan(x), np.isnan(y))
                and np.allclose(np.nan_to_num(x), np.nan_to_num(y), rtol=1e-9, atol=0))


def _canon_rt(df, bucket_col: str):
    df = df.copy()
    if bucket_col == "event_timestamp":
        df["bucket"] = df["event_timestamp"].astype("int64") // (600_000_000 if df["event_timestamp"].dt.unit == "us"
                                                                 else 600_000_000_000) - 1
    df = df[["user_id", "bucket", "current_page_views_10m"]].astype("int64")
    return df.sort_values(["user_id", "bucket"]).reset_index(drop=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: all cores)")
    parser.add_argument("--pandas-users", type=float, default=0.1, help="share of users pandas computes")
    parser.add_argument("--skip-naive", action="store_true", help="skip the (slow) naive DuckDB baseline")
    parser.add_argument("--keep", type=Path, default=None, help="keep the warehouse in this folder")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each engine; the fastest is reported")
    parser.add_argument("--etl-only", action="store_true", help="measure modelsvc etl (end to end) only")
    args = parser.parse_args()

    import pyarrow.compute as pc

    from modelsvc.etl import feature_sql, run_etl
    from modelsvc.warehouse import open_warehouse

    root = args.keep or Path(tempfile.mkdtemp(prefix="etl-bench-"))
    start = date(2025, 1, 1)
    days = [start + timedelta(days=i) for i in range(args.days)]
    try:
        t = time.perf_counter()
        n = generate(root, args.events, args.days, start, args.seed, args.threads)
        print(f"generated {n:,} raw events over {args.days} days in {time.perf_counter() - t:.1f}s -> {root}")
        settings = _settings(root, args.threads)
        results = []  # (name, events, seconds, identical)

        def best(fn):
            """(result of the fastest run, wall s, CPU s) over --repeat runs."""
            runs = []
            for _ in range(max(1, args.repeat)):
                t, c = time.perf_counter(), time.process_time()
                out = fn()
                runs.append((time.perf_counter() - t, time.process_time() - c, out))
            sec, cpu, out = min(runs, key=lambda r: r[0])
            return out, sec, cpu

        report, _, cpu = best(lambda: run_etl(settings, start_date=days[0], end_date=days[-1]))
        results.append(("modelsvc etl (end to end)", report.raw_events_read, report.seconds, cpu, "reference"))
        if args.etl_only:
            _print(results)
            return
        with open_warehouse(settings) as wh:
            ref_users = _canon_users(wh.read("user_features_precomputed").to_pandas(), "ds")
            ref_rt = _canon_rt(wh.read("user_realtime_features").to_pandas(), "event_timestamp")

            def compute_only():
                wh.check_raw("raw_events", start=report.raw_start, end=days[-1])
                sql = feature_sql("duckdb", days=days, raw_table="raw_events", etl=settings.etl,
                                  created=datetime.now(timezone.utc))
                return wh.query(sql.user_features), wh.query(sql.realtime_features)

            (u, r), sec, cpu = best(compute_only)
            results.append(("modelsvc sql (compute only)", n, sec, cpu,
                            _same(_canon_users(u.to_pandas(), "ds"), ref_users)
                            and _canon_rt(r.to_pandas(), "event_timestamp").equals(ref_rt)))

        if not args.skip_naive:
            (u, r), sec, cpu = best(lambda: duckdb_naive(root, days, args.threads))
            results.append(("duckdb naive (baseline)", n, sec, cpu, _same(_canon_users(u.to_pandas(), "ds"), ref_users)
                            and _canon_rt(r.to_pandas(), "event_timestamp").equals(ref_rt)))

        if importlib.util.find_spec("polars") is None:
            print("polars is not installed (pip install 'modelsvc[bench]'): its row is skipped", file=sys.stderr)
        else:
            (u, r), sec, cpu = best(lambda: polars_features(root, days))
            results.append(("polars (partial aggregates)", n, sec, cpu,
                            _same(_canon_users(u.to_pandas(), "snap"), ref_users)
                            and _canon_rt(r.to_pandas(), "bucket").equals(ref_rt)))

        all_users = pc.unique(open_warehouse(settings).read_raw(columns=["user_id"])
                              .column("user_id")).to_pylist()
        kept = set(sorted(all_users)[:: max(1, round(1 / args.pandas_users))])
        (u, r, n_sample, sec, cpu), _, _ = best(lambda: pandas_features(root, days, kept))
        sub = ref_users[ref_users["user_id"].isin(kept)].reset_index(drop=True)
        sub_rt = ref_rt[ref_rt["user_id"].isin(kept)].reset_index(drop=True)
        results.append((f"pandas (partial aggregates, {len(kept):,} users)", n_sample, sec, cpu,
                        _same(_canon_users(u, "snap"), sub) and _canon_rt(r, "bucket").equals(sub_rt)))

        _print(results)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


def _print(results: list) -> None:
    """The results table (rates against the naive baseline when it ran)."""
    base = next((e / s for name, e, s, _, _ in results if name.startswith("duckdb naive")), None)
    print(f"\nmachine: {platform.platform()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at the end")
    print(f"{'engine':<44} {'events':>12} {'wall s':>8} {'events/s':>12} {'vs naive':>9} {'cpu s':>8} "
          f"{'events/cpu-s':>13}  identical")
    for name, events, sec, cpu, same in results:
        rate = events / sec
        ratio = f"{rate / base:.1f}x" if base else "-"
        print(f"{name:<44} {events:>12,} {sec:>8.2f} {rate:>12,.0f} {ratio:>9} {cpu:>8.2f} {events / cpu:>13,.0f}"
              f"  {same}")


if __name__ == "__main__":
    main()
