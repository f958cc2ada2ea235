"""Readers of the local warehouse see a consistent snapshot while `etl` replaces partitions, and after it is killed.

Every reader checks every partition against the counts of a first ETL run (a rerun over the same raw events
writes the same number of rows per day): a missing partition, or a partition with other rows than a whole
version, fails. The readers: modelsvc's (``LocalWarehouse.partitions()`` + ``read``), a plain DuckDB glob over
the documented layout, and Feast's local offline store (its source reader, and ``get_historical_features``).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

import modelsvc
from modelsvc.demo import generate_demo_data
from modelsvc.etl import run_etl
from modelsvc.warehouse import open_warehouse

pytestmark = pytest.mark.slow

RAW_DAYS = 62
START = date(2025, 1, 1)
ETL_START, ETL_END = START + timedelta(days=RAW_DAYS - 60), START + timedelta(days=RAW_DAYS - 1)  # 60 days

STOP = "stop-etl-loop"  # created in the working directory by a test that has seen enough reads
# run_etl over [argv[1], argv[2]] at least argv[3] times in a row, then until the file STOP exists ("ready" once the
# imports are done): the readers' race does not depend on how fast one run is
ETL_LOOP = f"""
import sys
from pathlib import Path
from modelsvc.config import load_settings
from modelsvc.etl import run_etl
settings = load_settings(Path("configs"))
print("ready", flush=True)
runs = 0
while runs < int(sys.argv[3]) or not Path("{STOP}").exists():
    run_etl(settings, start_date=sys.argv[1], end_date=sys.argv[2])
    runs += 1
"""


def _etl_process(workdir: Path, runs: int) -> subprocess.Popen[str]:
    """`etl` in a process of its own, on the modelsvc under test; returns once it has imported everything."""
    src = str(Path(modelsvc.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", ETL_LOOP, str(ETL_START), str(ETL_END), str(runs)],
                            cwd=workdir, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


@pytest.fixture
def warehouse(settings):
    """62 days of demo raw events and the feature tables of their last 60 days; (settings, expected) where
    expected maps each feature table to its rows per day."""
    generate_demo_data(settings, users=25, days=RAW_DAYS, start_date=START, seed=5)
    run_etl(settings, start_date=ETL_START, end_date=ETL_END)
    tables = (settings.tables.user_features, settings.tables.realtime_features)
    expected = {}
    with open_warehouse(settings) as wh:
        for t in tables:
            assert wh.partitions(t) == [ETL_START + timedelta(days=i) for i in range(60)]
            rows = Counter(wh.read(t, columns=["ds"]).column("ds").to_pylist())
            expected[t] = {d.isoformat(): rows.get(d.isoformat(), 0) for d in wh.partitions(t)}  # 0: empty day
    return settings, expected


def _check(reader: str, table: str, got: dict[str, int], expected: dict[str, int], *, listed: list[date] | None = None,
           problems: list[str]) -> None:
    if listed is not None and [d.isoformat() for d in listed] != sorted(expected):
        missing = sorted(set(expected) - {d.isoformat() for d in listed})
        problems.append(f"{reader}: {table} lists {len(listed)} partitions, missing {missing[:3]}")
    wrong = {d: (got.get(d, 0), n) for d, n in expected.items() if got.get(d, 0) != n}
    if wrong:
        problems.append(f"{reader}: {table} rows per day (got, expected) {dict(list(wrong.items())[:3])}")


def read_modelsvc(settings, expected, problems: list[str]) -> None:
    with open_warehouse(settings) as wh:
        for table, counts in expected.items():
            listed = wh.partitions(table)
            got = Counter(wh.read(table, columns=["ds"]).column("ds").to_pylist())
            _check("modelsvc", table, got, counts, listed=listed, problems=problems)


def read_duckdb_glob(settings, expected, problems: list[str]) -> None:
    import duckdb

    con = duckdb.connect()
    try:
        for table, counts in expected.items():
            glob = settings.paths.resolve("warehouse") / table / "ds=*" / "*.parquet"
            rows = con.sql(f"SELECT ds, count(*) FROM read_parquet('{glob}', hive_partitioning = true, "
                           "hive_types = {'ds': VARCHAR}) GROUP BY ds").fetchall()
            _check("duckdb glob", table, dict(rows), counts, problems=problems)
    finally:
        con.close()


def read_feast_source(settings, expected, problems: list[str]) -> None:
    """The reader Feast's local offline store uses for every source (pull, materialize, its ibis join)."""
    from modelsvc.features import batch_source
    from modelsvc.features.local import read_source

    for table, counts in expected.items():
        source = batch_source(settings, table, feature_ts_column="ts_us")
        got = read_source(source, ".").group_by("ds").aggregate(n=lambda t: t.count()).to_pyarrow().to_pylist()
        _check("feast source", table, {str(r["ds"]): r["n"] for r in got}, counts, problems=problems)


def _entity(settings) -> tuple[pd.DataFrame, list[int]]:
    """One impression an hour after each snapshot of a user present every day; the feature-row timestamps
    (epoch us) the offline view must join: the snapshot of that very day."""
    with open_warehouse(settings) as wh:
        rows = wh.read(settings.tables.user_features, columns=["user_id", "ds"]).to_pandas()
    per_user = rows.groupby("user_id")["ds"].nunique()
    user = int(per_user[per_user == 60].index[0])
    snapshots = [datetime.combine(ETL_START + timedelta(days=i + 1), datetime.min.time(), tzinfo=timezone.utc)
                 for i in range(60)]
    entity = pd.DataFrame({"user_id": [user] * 60, "event_id": [f"e{i}" for i in range(60)],
                           "event_timestamp": [s + timedelta(hours=1) for s in snapshots]})
    return entity, [int(s.timestamp() * 1_000_000) for s in snapshots]


def read_feast_historical(settings, entity: pd.DataFrame, want: list[int], problems: list[str]) -> None:
    from modelsvc.features import historical_features

    got = historical_features(settings, entity)
    column = next(c for c, refs in got.timestamp_columns.items() if "total_orders_7d" in refs)
    joined = got.table.column(column).to_pylist()
    stale = [(i, g, w) for i, (g, w) in enumerate(zip(joined, want, strict=True)) if g != w]
    if stale:
        problems.append(f"feast get_historical_features: {len(stale)} rows joined another day's snapshot, "
                        f"e.g. {stale[0]}")


@pytest.mark.timeout(300)
def test_readers_never_see_a_partition_missing_while_etl_replaces_60_days(warehouse, workdir):
    settings, expected = warehouse
    entity, want = _entity(settings)
    read_feast_historical(settings, entity, want, [])  # the registry is applied once, before the race
    problems: list[str] = []
    reads = Counter()
    proc = _etl_process(workdir, runs=3)
    stop = threading.Event()

    def listing_loop() -> None:  # the cheapest reader, in a tight loop: the one most likely to hit a swap
        from modelsvc.warehouse.local import LocalWarehouse

        wh = LocalWarehouse(settings)
        while not stop.is_set():
            for table, counts in expected.items():
                listed = wh.partitions(table)
                if len(listed) != len(counts):
                    problems.append(f"modelsvc partitions(): {table} lists {len(listed)} of {len(counts)}")
            reads["listing"] += 1

    lister = threading.Thread(target=listing_loop, daemon=True)
    lister.start()
    try:
        while proc.poll() is None:
            read_modelsvc(settings, expected, problems)
            read_duckdb_glob(settings, expected, problems)
            read_feast_source(settings, expected, problems)
            reads["full"] += 1
            if reads["full"] % 4 == 0:
                read_feast_historical(settings, entity, want, problems)
                reads["historical"] += 1
            if reads["historical"] >= 1 and reads["listing"] >= 100:
                (workdir / STOP).touch()  # enough reads: the loop ends after its current run
    finally:
        stop.set()
        lister.join(30)
        proc.kill()
        proc.wait()
    assert not problems, f"{len(problems)} inconsistent reads of {dict(reads)}: {problems[:5]}"
    assert proc.returncode == 0
    assert reads["full"] >= 3, reads
    assert reads["listing"] >= 100, reads
    assert reads["historical"] >= 1, reads


@pytest.mark.timeout(240)
def test_sigkill_at_random_points_of_etl_never_leaves_a_hole(warehouse, workdir):
    settings, expected = warehouse
    rng = random.Random(9)
    t = time.perf_counter()
    run_etl(settings, start_date=ETL_START, end_date=ETL_END)
    one_run = time.perf_counter() - t
    staged_runs = set()
    for _ in range(22):
        proc = _etl_process(workdir, runs=100)
        time.sleep(rng.uniform(0, 1.5 * one_run))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        problems: list[str] = []
        read_duckdb_glob(settings, expected, problems)  # at once: no write, no repair in between
        read_modelsvc(settings, expected, problems)
        assert not problems, problems
        staging = settings.paths.resolve("warehouse") / ".staging"
        staged_runs |= set(staging.glob("*/[!.]*")) if staging.is_dir() else set()  # run folders, not locks
    assert staged_runs, "no kill landed during a write"

    # the next run deletes what the killed ones left (kept replaced partitions too: no grace period here)
    settings.warehouse.keep_replaced_s = 0
    run_etl(settings, start_date=ETL_START, end_date=ETL_END)
    root = settings.paths.resolve("warehouse")
    assert [p for t in expected for p in (root / ".staging" / t).glob("[!.]*")] == []
    for table in expected:
        assert sorted(p.name for p in (root / table).iterdir()) == [f"ds={d}" for d in sorted(expected[table])]
    problems = []
    read_modelsvc(settings, expected, problems)
    assert not problems, problems
