"""The chunked Hive backfill without a server: which statements a chunk of days sends, and the fallbacks.

The SQL itself is run by a real Spark Thrift server in tests/integration/test_hive_backfill.py; here a scripted
connection answers the few metadata queries and records every statement.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timezone

import pytest

from modelsvc.config import load_settings
from modelsvc.errors import UsageError
from modelsvc.etl import feature_sql
from modelsvc.warehouse.hive import HiveQueryError, HiveWarehouse

DAYS = [date(2024, 3, 10), date(2024, 3, 11), date(2024, 3, 12)]
STAGE_COUNTS = [("2024-03-10", 5), ("2024-03-12", 2)]  # 2024-03-11 has no rows
COLUMNS = [("user_id", "bigint", ""), ("event_timestamp", "timestamp", ""), ("created_timestamp", "timestamp", ""),
           ("current_page_views_10m", "bigint", ""), ("ds", "string", ""), ("# Partition Information", "", "")]


class ScriptedConnection:
    """A pyhive connection stand-in: records statements, answers SHOW TABLES / DESCRIBE / the stage's counts,
    and fails the dynamic-partition insert with ``refuse`` when given."""

    def __init__(self, refuse: str | None = None) -> None:
        self.statements: list[str] = []
        self.refuse = refuse
        self._rows: list[tuple] = []

    def cursor(self) -> ScriptedConnection:
        return self

    def execute(self, sql: str, parameters: object = None) -> None:
        from pyhive import exc

        self.statements.append(sql)
        if sql.startswith("SHOW TABLES"):  # every table exists
            self._rows = [("db", re.findall(r"LIKE '(\w+)'", sql)[0], False)]
        elif sql.startswith("DESCRIBE"):
            self._rows = list(COLUMNS)
        elif sql.startswith("SELECT `ds`, COUNT(*) FROM `db`.`modelsvc_stage_"):
            self._rows = list(STAGE_COUNTS)
        elif self.refuse and re.match(r"INSERT OVERWRITE TABLE \S+ PARTITION \(`ds`\) SELECT", sql):
            raise exc.OperationalError(self.refuse)
        else:
            self._rows = []

    def fetchall(self) -> list[tuple]:
        return self._rows

    def close(self) -> None:
        pass


def _warehouse(conn: ScriptedConnection, **hive: object) -> HiveWarehouse:
    settings = load_settings(None, warehouse={"engine": "hive"}, hive={"host": "127.0.0.1", "database": "db", **hive},
                             tables={"realtime_features": "realtime"})
    return HiveWarehouse(settings, connection_factory=lambda _: conn)


def _select() -> str:
    settings = load_settings(None)
    return feature_sql("hive", days=DAYS, raw_table="raw_events", etl=settings.etl,
                       created=datetime(2024, 3, 13, tzinfo=timezone.utc), ordered=False).realtime_features


def _writes(conn: ScriptedConnection) -> list[str]:
    return [s for s in conn.statements if s.startswith(("CREATE TABLE", "INSERT", "FROM", "DROP", "SET"))]


def test_a_chunk_is_computed_once_then_written_with_one_dynamic_insert_and_empty_days_emptied() -> None:
    conn = ScriptedConnection()
    written = _warehouse(conn).overwrite_partitions_from_select("realtime", DAYS, _select())
    assert written == {date(2024, 3, 10): 5, date(2024, 3, 11): 0, date(2024, 3, 12): 2}
    writes = _writes(conn)
    # the feature SQL (the raw table's lookback) is read once, by the stage's CTAS, for the three days
    assert sum("FROM raw_events" in s for s in conn.statements) == 1
    assert writes[0].startswith("CREATE TABLE `db`.`modelsvc_stage_realtime_")
    assert "FROM raw_events" in writes[0]
    assert writes[1:4] == ["SET hive.exec.dynamic.partition=true", "SET hive.exec.dynamic.partition.mode=nonstrict",
                           "SET spark.sql.sources.partitionOverwriteMode=dynamic"]
    assert re.match(r"INSERT OVERWRITE TABLE `db`.`realtime` PARTITION \(`ds`\) SELECT .* FROM `db`.`modelsvc_stage_",
                    writes[4])
    # a dynamic overwrite leaves a day without rows alone: it is overwritten with a static partition
    assert writes[5].startswith("FROM `db`.`modelsvc_stage_realtime_")
    assert re.findall(r"PARTITION \(`ds`='([0-9-]+)'\)", writes[5]) == ["2024-03-11"]
    assert writes[6].startswith("DROP TABLE IF EXISTS `db`.`modelsvc_stage_realtime_")
    assert len(writes) == 7


def test_a_server_refusing_dynamic_partitions_gets_static_partitions_for_every_day() -> None:
    conn = ScriptedConnection(refuse="Error running query: org.apache.spark.SparkException: Dynamic partition strict "
                                     "mode requires at least one static partition column.")
    wh = _warehouse(conn)
    written = wh.overwrite_partitions_from_select("realtime", DAYS, _select())
    assert written == {date(2024, 3, 10): 5, date(2024, 3, 11): 0, date(2024, 3, 12): 2}
    multi = [s for s in conn.statements if s.startswith("FROM `db`.`modelsvc_stage_")]
    assert len(multi) == 1
    assert re.findall(r"PARTITION \(`ds`='([0-9-]+)'\)", multi[0]) == [d.isoformat() for d in DAYS]
    assert conn.statements[-1].startswith("DROP TABLE IF EXISTS `db`.`modelsvc_stage_")
    # the session remembers: the next chunk does not try the dynamic insert again
    conn.statements.clear()
    wh.overwrite_partitions_from_select("realtime", DAYS, _select())
    assert not [s for s in conn.statements if "PARTITION (`ds`) SELECT" in s]


def test_another_server_error_is_raised_and_the_stage_dropped() -> None:
    conn = ScriptedConnection(refuse="Error running query: disk full")
    with pytest.raises(HiveQueryError, match="disk full"):
        _warehouse(conn).overwrite_partitions_from_select("realtime", DAYS, _select())
    assert conn.statements[-1].startswith("DROP TABLE IF EXISTS `db`.`modelsvc_stage_")
    assert not [s for s in conn.statements if s.startswith("FROM")]


def _etl_statements(chunk_days: int, days: list[date]) -> list[str]:
    conn = ScriptedConnection()
    wh = _warehouse(conn, backfill_chunk_days=chunk_days)
    settings = wh.settings

    def sql(chunk, ordered):
        return feature_sql("hive", days=chunk, raw_table="raw_events", etl=settings.etl,
                           created=datetime(2024, 3, 13, tzinfo=timezone.utc), ordered=ordered)

    wh.write_features(sql, days)
    return conn.statements


def test_backfill_chunk_days_bounds_the_days_per_statement_and_1_sends_per_day_statements() -> None:
    days = [date(2024, 3, d) for d in range(1, 11)]
    # per day: the lookback is read by 2 statements per day, each an INSERT OVERWRITE of one static partition
    per_day = [s for s in _etl_statements(1, days) if "FROM raw_events" in s]
    assert len(per_day) == 20
    assert all(re.match(r"INSERT OVERWRITE TABLE \S+ PARTITION \(`ds`='2024-03-\d\d'\) SELECT", s) for s in per_day)
    # chunks of 4 days: 4 + 4 + 2 days, one CTAS per table and chunk
    chunked = [s for s in _etl_statements(4, days) if "FROM raw_events" in s]
    assert len(chunked) == 6
    assert all(s.startswith("CREATE TABLE") for s in chunked)
    spans = [re.findall(r"q.`ds` >= '([0-9-]+)' AND q.`ds` <= '([0-9-]+)'", s)[0] for s in chunked]
    assert spans == [("2024-03-01", "2024-03-04")] * 2 + [("2024-03-05", "2024-03-08")] * 2 + [
        ("2024-03-09", "2024-03-10")] * 2


def test_hostile_days_and_tables_are_refused_before_any_statement() -> None:
    conn = ScriptedConnection()
    wh = _warehouse(conn)
    with pytest.raises(UsageError, match="is not a date"):
        wh.overwrite_partitions_from_select("realtime", [DAYS[0], "2024-01-01') SELECT 1; --"],  # type: ignore[list-item]
                                            "SELECT 1")
    with pytest.raises(UsageError, match="not a valid identifier"):
        wh.overwrite_partitions_from_select("x; DROP TABLE y", DAYS, "SELECT 1")
    assert conn.statements == []
