"""`modelsvc etl` on Hive: the shared feature SQL run by the server, checked against the ETL cases and against
the DuckDB engine on the same raw events (engine parity)."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from modelsvc.config import load_settings
from modelsvc.etl import run_etl
from modelsvc.warehouse import open_warehouse
from tests.etl_cases import CASES, ev, events_table, run_case, same_rows
from tests.fixtures.hive import create_database

pytestmark = [pytest.mark.integration, pytest.mark.hive, pytest.mark.slow]

DAYS = ("2024-03-10", "2024-03-11")  # the days of the ETL cases (tests/etl_cases.py)


def random_events(seed: int, *, users: int = 6, start: date = date(2024, 3, 4), days: int = 8) -> list[dict]:
    """Random raw events: a few users over the lookback and the ETL days, every event type, nulls, ties."""
    rng = random.Random(seed)
    out = []
    for i in range(200):
        day = start + timedelta(days=rng.randrange(days))
        when = datetime(day.year, day.month, day.day, tzinfo=timezone.utc) + timedelta(
            seconds=rng.randrange(86400), microseconds=rng.choice([0, rng.randrange(10**6)]))
        kind = rng.choice(["page_view", "page_view", "order", "impression"])
        out.append(ev(f"r{seed}-{i:04d}", rng.randrange(1, users + 1), when.strftime("%Y-%m-%d %H:%M:%S.%f"), kind,
                      rng.choice(["ios", "web", "android", None]),
                      round(rng.uniform(0.5, 300), 2) if kind == "order" and rng.random() < 0.9 else None,
                      rng.randrange(2) if kind == "impression" else None))
    return out


def _normal(table) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k != "created_timestamp"} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r["ds"], r["user_id"], r["event_timestamp"]))


def test_hive_and_duckdb_compute_identical_feature_tables(hive_server, tmp_path: Path) -> None:
    """Random events plus every ETL case's events (its edge cases) through both engines: same rows."""
    from tests.conftest import CONFIGS

    events = random_events(1) + [e for case in CASES for e in case.events]
    raw = events_table(events)
    local = load_settings(CONFIGS, paths={"root": str(tmp_path / "local")})
    hive = load_settings(CONFIGS, paths={"root": str(tmp_path / "hive")},
                         **hive_server.settings_overrides(database=create_database(hive_server, "parity")))
    reports = {}
    for settings in (local, hive):
        with open_warehouse(settings) as wh:
            wh.write_partitions(settings.tables.raw_events, raw)
        reports[settings.warehouse.engine] = run_etl(settings, start_date=DAYS[0], end_date=DAYS[1])
    assert reports["hive"].rows_written == reports["duckdb"].rows_written
    # the lookback reads all but the two events planted before it (window_edges a01, b02)
    assert reports["hive"].raw_events_read == reports["duckdb"].raw_events_read == len(events) - 2

    for table in (local.tables.user_features, local.tables.realtime_features):
        with open_warehouse(local) as wh:
            expected = wh.read(table)
        with open_warehouse(hive) as wh:
            got = wh.read(table)
        assert got.schema.names == expected.schema.names
        assert got.schema == expected.schema, table
        exp_rows, got_rows = _normal(expected), _normal(got)
        assert len(exp_rows) > 10
        for g, e in zip(got_rows, exp_rows, strict=True):
            assert g == e, table  # value by value, floats bit-identical (the SQL sums DECIMALs)


@pytest.mark.parametrize("chunk_days", [1, 31])
def test_hive_etl_computes_the_case_on_the_server(hive_settings, monkeypatch: pytest.MonkeyPatch,
                                                  chunk_days: int) -> None:
    """The window-edge case gives its expected rows on Hive, computed and written by the server (rows are never
    read back and uploaded): per day, INSERT OVERWRITE … PARTITION (ds='…') SELECT …; in chunks, one CTAS stage
    per table, then INSERT OVERWRITE … PARTITION (ds) from it."""
    import modelsvc.warehouse as registry
    from modelsvc.warehouse.hive import HiveWarehouse, connect

    settings = hive_settings.model_copy(
        update={"hive": hive_settings.hive.model_copy(update={"backfill_chunk_days": chunk_days})})
    case = CASES[0]
    sent: list[str] = []

    class Recording(HiveWarehouse):
        def execute(self, sql, *, table=None):
            sent.append(sql)
            return super().execute(sql, table=table)

    monkeypatch.setattr(registry, "open_warehouse", lambda settings: Recording(settings, connection_factory=connect))
    users, realtime = run_case(case, settings)
    assert same_rows(users, case.user_features), users
    assert same_rows(realtime, case.realtime), realtime
    computed = [s for s in sent if "FROM raw_events" in s]
    if chunk_days == 1:
        assert len(computed) == 4  # two tables x two days, each a server-side SELECT over the raw table
        assert all(s.startswith("INSERT OVERWRITE TABLE") and "PARTITION (`ds`='2024-03-1" in s for s in computed)
    else:
        assert len(computed) == 2  # two tables, both days at once
        assert all(s.startswith("CREATE TABLE") and "modelsvc_stage_" in s for s in computed)
        for table in (settings.tables.user_features, settings.tables.realtime_features):
            # written from its stage: a dynamic-partition insert, or static partitions for days without rows
            assert any(f"modelsvc_stage_{table}_" in s and ("PARTITION (`ds`) SELECT" in s or s.startswith("FROM"))
                       for s in sent), table
    assert [s for s in sent if s.startswith("INSERT INTO")] == [  # only the raw upload goes row by row
        s for s in sent if s.startswith("INSERT INTO TABLE") and "modelsvc_stage_raw_events" in s]


def test_hive_etl_checks_the_raw_data_before_any_write(hive_server, tmp_path: Path) -> None:
    """As on the local engine: is_clicked outside {0, 1}, and an event stored outside its UTC day's partition,
    are a DataError (65) naming the partition and the count, found by the server before any feature table is
    written."""
    import pyarrow as pa

    from modelsvc.errors import DataError
    from tests.conftest import CONFIGS

    settings = load_settings(CONFIGS, paths={"root": str(tmp_path)},
                             **hive_server.settings_overrides(database=create_database(hive_server, "rawcheck")))
    good = [ev("g1", 1, "2024-03-10 08:00:00", "impression", is_clicked=1),
            ev("g2", 2, "2024-03-11 09:00:00", "page_view")]
    clicked_2 = events_table([*good, ev("bad", 3, "2024-03-11 10:00:00", "impression", is_clicked=2)])
    # the late event of 03-10 stored in the partition of 03-11 (a writer that used local time, say)
    misplaced = events_table([*good, ev("late", 4, "2024-03-10 23:30:00", "page_view")])
    ds = misplaced.column("ds").to_pylist()
    misplaced = misplaced.set_column(misplaced.schema.get_field_index("ds"), "ds",
                                     pa.array([*ds[:-1], "2024-03-11"], pa.string()))
    expected = {
        "clicked": "partition ds=2024-03-11: column 'is_clicked' has 1 value(s) other than 0 and 1",
        "misplaced": "partition ds=2024-03-11: 1 event(s) lie outside the partition's UTC day (e.g. event 'late')",
    }
    for name, raw in (("clicked", clicked_2), ("misplaced", misplaced)):
        with open_warehouse(settings) as wh:
            wh.write_partitions(settings.tables.raw_events, raw)
        with pytest.raises(DataError) as err:
            run_etl(settings, start_date=DAYS[0], end_date=DAYS[1])
        assert err.value.exit_code == 65
        assert expected[name] in err.value.message, err.value.message
        with open_warehouse(settings) as wh:
            assert not wh.table_exists(settings.tables.user_features)  # nothing was written
