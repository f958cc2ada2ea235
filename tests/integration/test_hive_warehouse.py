"""The Hive engine against a real HiveServer2 (Spark Thrift server started once per session)."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from modelsvc.errors import DataError, NotFoundError, UsageError
from modelsvc.warehouse import open_warehouse
from modelsvc.warehouse.hive import HiveWarehouse, connect

pytestmark = [pytest.mark.integration, pytest.mark.hive]

UTC = timezone.utc
SCHEMA = pa.schema([("event_id", pa.string()), ("user_id", pa.int64()),
                    ("event_timestamp", pa.timestamp("us", tz="UTC")), ("purchase_value", pa.float64()),
                    ("is_clicked", pa.int32()), ("ds", pa.string())])


def _rows() -> list[dict]:
    awkward = ["it's", "back\\slash", "x'; DROP TABLE y; --", "new\nline", "ünïcödé ✓ \U0001F600", "", "\\'",
               "%(x)s", "tab\there", '"quoted"', "\\n not a newline", "\r\n", "\\u0041"]
    rows = []
    for i, text in enumerate(awkward):
        rows.append({"event_id": text, "user_id": i, "ds": f"2024-01-0{1 + i % 3}",
                     "event_timestamp": datetime(2024, 1, 1 + i % 3, 23, 59, 59, 999_999 - i, tzinfo=UTC),
                     "purchase_value": None if i % 4 == 0 else i / 3, "is_clicked": None if i == 1 else i % 2})
    return rows


class CountingConnection:
    """Wraps a real pyhive connection and records every statement sent."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.statements: list[str] = []

    def cursor(self):
        outer = self
        cur = self.conn.cursor()

        class Cursor:
            def execute(self, sql, parameters=None):
                outer.statements.append(sql)
                return cur.execute(sql, parameters)

            def __getattr__(self, name):
                return getattr(cur, name)

        return Cursor()

    def close(self) -> None:
        self.conn.close()


def test_round_trip_keeps_values_exactly(hive_settings) -> None:
    data = pa.Table.from_pylist(_rows(), schema=SCHEMA)
    with open_warehouse(hive_settings) as wh:
        assert isinstance(wh, HiveWarehouse)
        assert wh.write_partitions("events", data) == [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
        assert wh.partitions("events") == [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
        assert wh.table_exists("events") and not wh.table_exists("events_nope")
        got = wh.read("events")
    assert got.schema == SCHEMA
    assert sorted(got.to_pylist(), key=lambda r: r["user_id"]) == _rows()


def test_special_floats_and_extreme_values_round_trip(hive_settings) -> None:
    import math

    values = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, None]
    data = pa.table({"v": values, "n": pa.array([-(2**63), 2**63 - 1, 0, None, 1, 2, 3, 4], pa.int64()),
                     "ds": ["2024-01-01"] * 8})
    with open_warehouse(hive_settings) as wh:
        wh.write_partitions("floats", data)
        got = sorted(wh.read("floats").to_pylist(), key=lambda r: (r["n"] is None, r["n"] or 0))
    expected = sorted(data.to_pylist(), key=lambda r: (r["n"] is None, r["n"] or 0))
    for g, e in zip(got, expected, strict=True):
        assert g["n"] == e["n"]
        if e["v"] is None or math.isnan(e["v"]):
            assert (g["v"] is None) == (e["v"] is None) and (g["v"] is None or math.isnan(g["v"]))
        else:
            assert g["v"] == e["v"] and math.copysign(1, g["v"]) == math.copysign(1, e["v"])


def test_read_prunes_partitions_and_selects_columns(hive_settings) -> None:
    with open_warehouse(hive_settings) as wh:
        wh.write_partitions("events", pa.Table.from_pylist(_rows(), schema=SCHEMA))
        got = wh.read("events", start=date(2024, 1, 2), end=date(2024, 1, 2), columns=["user_id"])
    assert got.column_names == ["user_id", "ds"]
    assert sorted(got.column("user_id").to_pylist()) == [1, 4, 7, 10]
    assert set(got.column("ds").to_pylist()) == {"2024-01-02"}


def test_rewriting_a_partition_replaces_only_that_partition(hive_settings) -> None:
    with open_warehouse(hive_settings) as wh:
        wh.write_partitions("events", pa.Table.from_pylist(_rows(), schema=SCHEMA))
        new = [{**_rows()[0], "event_id": "replaced", "user_id": 100, "ds": "2024-01-02"}]
        assert wh.write_partitions("events", pa.Table.from_pylist(new, schema=SCHEMA)) == [date(2024, 1, 2)]
        got = wh.read("events")
        # no staging table is left behind in the scratch database
        assert [t for t in wh.scalar_rows(f"SHOW TABLES IN `{wh.scratch_database}`")
                if "modelsvc_stage" in str(t)] == []
    by_day: dict[str, list[int]] = {}
    for r in got.to_pylist():
        by_day.setdefault(r["ds"], []).append(r["user_id"])
    assert {d: sorted(v) for d, v in by_day.items()} == {"2024-01-01": [0, 3, 6, 9, 12], "2024-01-02": [100],
                                                         "2024-01-03": [2, 5, 8, 11]}


def test_missing_table_is_not_found(hive_settings) -> None:
    with open_warehouse(hive_settings) as wh:
        assert wh.partitions("no_such_table") == []
        with pytest.raises(NotFoundError, match=rf"table {hive_settings.hive.database}\.no_such_table does not "
                                                rf"exist on HiveServer2 at 127\.0\.0\.1:\d+"):
            wh.read("no_such_table")
        with pytest.raises(NotFoundError, match="no_such_table"):
            wh.check_raw("no_such_table", start=date(2024, 1, 1), end=date(2024, 1, 2))


def test_raw_contract_is_checked_on_hive(hive_settings) -> None:
    bad = pa.table({"event_id": ["a"], "user_id": pa.array([1], pa.int64()), "ds": ["2024-01-01"]})
    with open_warehouse(hive_settings) as wh:
        wh.write_partitions("raw_bad", bad)
        with pytest.raises(DataError, match="table raw_bad: column 'event_timestamp' is missing"):
            wh.check_raw("raw_bad", start=date(2024, 1, 1), end=date(2024, 1, 1))


def test_hostile_names_never_reach_the_server(hive_settings) -> None:
    counting: list[CountingConnection] = []

    def factory(hive):
        counting.append(CountingConnection(connect(hive)))
        return counting[-1]

    wh = HiveWarehouse(hive_settings, connection_factory=factory)
    try:
        wh.write_partitions("victim", pa.Table.from_pylist(_rows()[:1], schema=SCHEMA))
        sent = len(counting[0].statements)
        assert sent > 0  # the wrapper does see the statements of legitimate calls
        for hostile in ["victim; DROP TABLE victim", "victim` ; DROP TABLE `victim"]:
            with pytest.raises(UsageError, match="not a valid identifier"):
                wh.read(hostile)
            with pytest.raises(UsageError, match="not a valid identifier"):
                wh.write_partitions(hostile, pa.Table.from_pylist(_rows()[:1], schema=SCHEMA))
        with pytest.raises(UsageError, match="is not a date"):
            wh.read("victim", start="2024-01-01' OR '1'='1")  # type: ignore[arg-type]
        assert len(counting[0].statements) == sent
        assert wh.read("victim").num_rows == 1  # still there
    finally:
        wh.close()


def test_a_failing_statement_names_the_server(hive_settings) -> None:
    from modelsvc.warehouse.hive import HiveQueryError

    with open_warehouse(hive_settings) as wh, pytest.raises(HiveQueryError, match=r"HiveServer2 at 127\.0\.0\.1:\d+"
                                                                                  r" failed a statement: .*"):
        wh.query("SELECT no_such_function(1)")


def test_a_query_past_the_timeout_is_retryable(hive_settings) -> None:
    from modelsvc.errors import RetryableError

    hive_settings.hive.query_timeout_s = 1
    with open_warehouse(hive_settings) as wh:
        assert wh.query("SELECT 1 AS one").to_pylist() == [{"one": 1}]
        with pytest.raises(RetryableError, match=r"HiveServer2 at 127\.0\.0\.1:\d+ did not answer within "
                                                 r"hive\.query_timeout_s=1s") as err:
            # sleeps on the server without using CPU
            wh.query("SELECT reflect('java.lang.Thread', 'sleep', CAST(3000 AS BIGINT))")
        assert err.value.exit_code == 75
        assert wh.query("SELECT 2 AS two").to_pylist() == [{"two": 2}]  # reconnects
