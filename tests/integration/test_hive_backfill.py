"""A Hive backfill computed in chunks of days (dynamic-partition inserts) writes the same tables as one computed
day by day (``hive.backfill_chunk_days: 1``), on the Spark Thrift server: row for row, partition for partition,
and a day without rows is emptied in both (stale rows never survive)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from modelsvc.config import load_settings
from modelsvc.etl import run_etl
from modelsvc.warehouse import open_warehouse
from tests.fixtures.hive import create_database

pytestmark = [pytest.mark.integration, pytest.mark.hive, pytest.mark.slow]

FIRST, LAST = date(2024, 5, 1), date(2024, 5, 6)  # the backfill: 6 days, in chunks of 4 and 2
NO_VIEWS = date(2024, 5, 3)  # a day of the backfill without page views: no realtime windows


def _raw():
    """A few thousand demo events over the 30-day lookback and the backfill; NO_VIEWS keeps only its orders and
    impressions."""
    import pyarrow.compute as pc

    from modelsvc.demo import simulate_events

    raw = simulate_events(users=8, days=36, start_date=FIRST - timedelta(days=30), seed=3)
    day = pc.cast(raw["ds"], "string")
    no_view = pc.and_(pc.equal(day, NO_VIEWS.isoformat()), pc.equal(raw["event_type"], "page_view"))
    return raw.filter(pc.invert(no_view))


def _rows(table) -> list[dict]:
    rows = [{k: v for k, v in r.items() if k != "created_timestamp"} for r in table.to_pylist()]
    return sorted(rows, key=lambda r: (r["ds"], r["user_id"], r["event_timestamp"]))


@pytest.mark.timeout(900)
def test_chunked_backfill_writes_the_tables_of_the_per_day_backfill(hive_server, tmp_path) -> None:
    import pyarrow as pa

    raw = _raw()
    assert 1500 < raw.num_rows < 5000
    settings = {}
    for chunk in (1, 4):
        database = create_database(hive_server, f"backfill{chunk}")
        s = load_settings(None, paths={"root": str(tmp_path / str(chunk))},
                          **hive_server.settings_overrides(database=database, backfill_chunk_days=chunk))
        with open_warehouse(s) as wh:
            wh.write_partitions(s.tables.raw_events, raw)
            # stale rows of an earlier run on the day that now has no page views: the backfill must remove them
            stale = pa.table({"user_id": pa.array([1], pa.int64()),
                              "event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC")),
                              "created_timestamp": pa.array([0], pa.timestamp("us", tz="UTC")),
                              "current_page_views_10m": pa.array([99], pa.int64()), "ds": [NO_VIEWS.isoformat()]})
            wh.write_partitions(s.tables.realtime_features, stale)
        settings[chunk] = s
        report = run_etl(s, start_date=FIRST, end_date=LAST)
        assert report.days == 6

    tables = (settings[1].tables.user_features, settings[1].tables.realtime_features)
    for table in tables:
        got = {}
        for chunk, s in settings.items():
            with open_warehouse(s) as wh:
                got[chunk] = (wh.read(table), wh.partitions(table))
        per_day, chunked = got[1], got[4]
        assert chunked[0].schema == per_day[0].schema, table
        assert len(per_day[0]) >= 48  # 8 users x 6 days of user features; more realtime windows
        assert _rows(chunked[0]) == _rows(per_day[0]), table  # value by value
        assert chunked[1] == per_day[1], table  # the same partitions, the emptied day's included
        days = {r["ds"] for r in _rows(chunked[0])}
        want = {(FIRST + timedelta(days=i)).isoformat() for i in range(6)}
        assert days == (want - {NO_VIEWS.isoformat()} if table == tables[1] else want), table
