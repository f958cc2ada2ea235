"""The Hive engine without a server: literals, identifier and date checks before any query, connection errors."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta, timezone

import pytest

from modelsvc.config import load_settings
from modelsvc.errors import DataError, ServiceUnavailableError, UsageError
from modelsvc.warehouse.hive import HiveWarehouse, _json_value, day_literal, sql_literal
from tests.fixtures._service import free_port


class CountingConnection:
    """Stands in for a pyhive connection: counts statements and fails the test if one is ever sent."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def cursor(self) -> CountingConnection:
        return self

    def execute(self, sql: str, parameters: object = None) -> None:
        self.statements.append(sql)
        raise AssertionError(f"a statement reached the server: {sql}")

    def close(self) -> None:
        pass


def _settings(**hive: object):
    return load_settings(None, warehouse={"engine": "hive"}, hive={"host": "127.0.0.1", **hive})


def test_string_literals_escape_quotes_and_backslashes() -> None:
    assert sql_literal("it's") == r"'it\'s'"
    assert sql_literal("a\\b") == r"'a\\b'"
    assert sql_literal("x'; DROP TABLE y; --") == r"'x\'; DROP TABLE y; --'"
    # a backslash before a quote cannot un-escape it
    assert sql_literal("\\'") == r"'\\\''"


def test_typed_literals() -> None:
    assert sql_literal(None, "BIGINT") == "CAST(NULL AS BIGINT)"
    assert sql_literal(True) == "TRUE"
    assert sql_literal(7, "BIGINT") == "7"
    assert sql_literal(7, "DOUBLE") == "CAST(7 AS DOUBLE)"
    assert sql_literal(0.1) == "CAST(0.1 AS DOUBLE)"
    assert sql_literal(float("nan"), "DOUBLE") == "CAST('NaN' AS DOUBLE)"
    assert sql_literal(None) == "NULL"
    assert sql_literal(-math.inf) == "CAST('-Infinity' AS DOUBLE)"
    assert sql_literal(date(2024, 3, 1)) == "DATE '2024-03-01'"
    # timestamps are rendered as UTC wall-clock time, whatever their zone
    cet = timezone(timedelta(hours=1))
    assert sql_literal(datetime(2024, 3, 1, 1, 0, 0, 5, tzinfo=cet)) == "TIMESTAMP '2024-03-01 00:00:00.000005'"
    with pytest.raises(Exception, match="cannot be sent to Hive"):
        sql_literal(object())


def test_upload_values_are_strings_the_server_casts_back() -> None:
    assert _json_value(None) is None
    assert _json_value(True) == "true"
    assert _json_value(12) == "12"
    assert _json_value(0.1) == "0.1"
    assert float(_json_value(1 / 3)) == 1 / 3
    assert [_json_value(v) for v in (math.nan, math.inf, -math.inf)] == ["NaN", "Infinity", "-Infinity"]
    cet = timezone(timedelta(hours=1))
    assert _json_value(datetime(2024, 3, 1, 1, 0, 0, 5, tzinfo=cet)) == "2024-03-01 00:00:00.000005"
    assert _json_value(date(2024, 3, 1)) == "2024-03-01"


@pytest.mark.parametrize("bad", ["2024-3-1", "2024-02-30", "2024-01-01' OR '1'='1", "yesterday"])
def test_day_literal_refuses_anything_but_a_date(bad: str) -> None:
    with pytest.raises(UsageError, match="is not a date"):
        day_literal(bad)


HOSTILE = ["x; DROP TABLE y", "raw_events`", "a.b", "1abc", "", "t --"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_table_names_are_refused_before_any_statement(name: str) -> None:
    import pyarrow as pa

    conn = CountingConnection()
    wh = HiveWarehouse(_settings(), connection_factory=lambda hive: conn)
    data = pa.table({"x": [1], "ds": ["2024-01-01"]})
    calls = [
        lambda: wh.read(name), lambda: wh.partitions(name), lambda: wh.table_exists(name),
        lambda: wh.write_partitions(name, data), lambda: wh.check_raw(name, start=date(2024, 1, 1),
                                                                       end=date(2024, 1, 2)),
        lambda: wh.overwrite_partition_from_select(name, date(2024, 1, 1), "SELECT 1"), lambda: wh.drop_table(name),
    ]
    for call in calls:
        with pytest.raises(UsageError, match="not a valid identifier"):
            call()
    assert conn.statements == []


def test_hostile_column_names_and_days_are_refused_before_any_statement() -> None:
    import pyarrow as pa

    conn = CountingConnection()
    wh = HiveWarehouse(_settings(), connection_factory=lambda hive: conn)
    with pytest.raises(UsageError, match="not a valid identifier"):
        wh.read("raw_events", columns=["user_id", "x) FROM y; --"])
    with pytest.raises(UsageError, match="is not a date"):
        wh.overwrite_partition_from_select("t", "2024-01-01') SELECT 1; --", "SELECT 1")  # type: ignore[arg-type]
    # a bad ds in the rows is bad data; '20240101' would be a second spelling of a partition whose rows no
    # partition insert would match: refused too
    for bad in ("2024-01-01'", "20240101"):
        with pytest.raises(DataError, match=f"'ds' value {bad!r} is not a YYYY-MM-DD date"):
            wh.write_partitions("t", pa.table({"x": [1, 2], "ds": ["2024-01-02", bad]}))
    with pytest.raises(DataError, match="null 'ds'"):
        wh.write_partitions("t", pa.table({"x": [1, 2], "ds": ["2024-01-02", None]}))
    assert conn.statements == []


def test_hostile_database_setting_is_refused() -> None:
    from modelsvc.errors import ConfigError

    with pytest.raises(ConfigError, match=r"hive.database"):
        _settings(database="default; DROP DATABASE x")


def test_unreachable_server_is_service_unavailable_naming_host_port_never_the_password() -> None:
    port = free_port()  # nothing listens there
    settings = _settings(port=port, auth="LDAP", username="svc", password="s3cr3t-value", connect_timeout_s=2)
    wh = HiveWarehouse(settings)
    with pytest.raises(ServiceUnavailableError) as err:
        wh.partitions("raw_events")
    assert err.value.exit_code == 69
    assert f"127.0.0.1:{port}" in err.value.message
    assert "s3cr3t" not in err.value.message
    assert "s3cr3t" not in (err.value.hint or "")
    assert err.value.message.startswith(f"cannot reach HiveServer2 at 127.0.0.1:{port}")


def test_ldap_without_a_password_is_a_config_error() -> None:
    from modelsvc.errors import ConfigError

    wh = HiveWarehouse(_settings(port=free_port(), auth="LDAP"))
    with pytest.raises(ConfigError, match=r"hive.auth is LDAP but hive.password is not set") as err:
        wh.table_exists("raw_events")
    assert err.value.exit_code == 78


def test_unknown_host_is_service_unavailable() -> None:
    wh = HiveWarehouse(_settings(host="no-such-host.invalid", port=10000, connect_timeout_s=2))
    with pytest.raises(ServiceUnavailableError, match=r"no-such-host.invalid:10000"):
        wh.table_exists("raw_events")


def test_etl_on_an_unreachable_hive_is_exit_69(workdir) -> None:
    from modelsvc.etl import run_etl

    port = free_port()
    settings = load_settings(workdir / "configs", warehouse={"engine": "hive"},
                             hive={"host": "127.0.0.1", "port": port, "connect_timeout_s": 2})
    with pytest.raises(ServiceUnavailableError, match=f"cannot reach HiveServer2 at 127.0.0.1:{port}") as err:
        run_etl(settings, start_date="2024-01-01", end_date="2024-01-01")
    assert err.value.exit_code == 69


def test_hive_raw_columns_are_checked_against_the_one_contract() -> None:
    from modelsvc.warehouse.hive import _check_raw_columns

    good = [("event_id", "STRING"), ("user_id", "BIGINT"), ("event_timestamp", "TIMESTAMP"),
            ("event_type", "VARCHAR(20)"), ("platform", "STRING"), ("purchase_value", "DECIMAL(18,2)"),
            ("is_clicked", "BOOLEAN")]
    _check_raw_columns("raw", good)
    for column, typ, message in [("user_id", "ARRAY<BIGINT>", "column 'user_id' has type ARRAY<BIGINT>"),
                                 ("event_timestamp", "STRING", "'event_timestamp' is a string"),
                                 ("is_clicked", "DATE", r"column 'is_clicked' has type DATE \(expected integer")]:
        bad = [(n, typ if n == column else t) for n, t in good]
        with pytest.raises(DataError, match=message):
            _check_raw_columns("raw", bad)
    with pytest.raises(DataError, match="table raw: column 'platform' is missing"):
        _check_raw_columns("raw", [c for c in good if c[0] != "platform"])


class AnsweringConnection(CountingConnection):
    """Answers every statement with the given rows (records them)."""

    def __init__(self, rows: list[tuple]) -> None:
        super().__init__()
        self.rows = rows

    def execute(self, sql: str, parameters: object = None) -> None:
        self.statements.append(sql)

    def fetchall(self) -> list[tuple]:
        return self.rows


def test_partition_counts_and_the_raw_check_share_one_aggregate_query() -> None:
    """Both count rows per partition with one GROUP BY over the range; the raw check adds its contract
    aggregates to that query and refuses the first partition breaking one."""
    counts = AnsweringConnection([("2024-01-01", 5), ("2024-01-02", 7)])
    wh = HiveWarehouse(_settings(), connection_factory=lambda hive: counts)
    assert wh.partition_counts("raw", start=date(2024, 1, 1), end=date(2024, 1, 2)) == {
        date(2024, 1, 1): 5, date(2024, 1, 2): 7}
    checked = AnsweringConnection([("2024-01-01", 5, 0, 0, None), ("2024-01-02", 7, 0, 0, None)])
    wh = HiveWarehouse(_settings(), connection_factory=lambda hive: checked)
    assert wh._checked_counts("raw", start=date(2024, 1, 1), end=date(2024, 1, 2)) == {
        date(2024, 1, 1): 5, date(2024, 1, 2): 7}
    (plain,), (check,) = counts.statements, checked.statements
    head = "SELECT `ds`, COUNT(*)"
    tail = "FROM `default`.`raw` WHERE `ds` >= '2024-01-01' AND `ds` <= '2024-01-02' GROUP BY `ds` ORDER BY `ds`"
    assert plain == f"{head} {tail}"
    assert check.startswith(head + ", SUM(CASE WHEN is_clicked")
    assert check.endswith(tail)
    for row, message in [(("2024-01-02", 7, 2, 0, None), "partition ds=2024-01-02: column 'is_clicked' has 2"),
                         (("2024-01-02", 7, 0, 3, "e9"), "partition ds=2024-01-02: 3 event.*'e9'")]:
        wh = HiveWarehouse(_settings(), connection_factory=lambda hive, r=row: AnsweringConnection([r]))
        with pytest.raises(DataError, match=message):
            wh._checked_counts("raw", start=date(2024, 1, 1), end=date(2024, 1, 2))
