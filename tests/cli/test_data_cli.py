"""CLI: demo-data and etl (exit codes, error lines, --json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def _invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


def test_demo_data_then_etl_json(workdir, runner):
    res = _invoke(runner, "demo-data", "--users", "200", "--days", "3", "--start-date", "2025-01-01",
                  "--seed", "5", "--json")
    assert res.exit_code == 0, res.output
    demo = json.loads(res.stdout)
    assert demo["days"] == 3
    assert demo["end_date"] == "2025-01-03"
    assert demo["impressions"] > 0
    assert (workdir / "data" / "warehouse" / "raw_events" / "ds=2025-01-03").is_dir()

    res = _invoke(runner, "etl", "--start-date", "2025-01-01", "--end-date", "2025-01-03", "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["days"] == 3
    assert report["raw_events_read"] == demo["events"]
    assert report["rows_written"]["user_features_precomputed"] > 0
    assert report["rows_written"]["user_realtime_features"] > 0


def test_etl_table_output(workdir, runner):
    assert _invoke(runner, "demo-data", "--users", "50", "--days", "2", "--seed", "1").exit_code == 0
    res = _invoke(runner, "etl", "--start-date", "2025-01-02")  # --end-date defaults to --start-date
    assert res.exit_code == 0, res.output
    assert "2025-01-02 .. 2025-01-02 (1)" in res.stdout
    assert "events/s" in res.stdout
    # not a terminal (a cron or CI log): no progress bars, but the log lines, time-stamped
    import re

    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ etl 2025-01-02\.\.2025-01-02: [\d,]+ raw events in "
                        r"raw_events from 2024-12-04", res.stderr.strip()), res.stderr
    res = _invoke(runner, "etl", "--start-date", "2025-01-02", "--json")
    assert res.exit_code == 0
    assert res.stderr == ""


@pytest.mark.parametrize(("args", "code", "line"), [
    (["etl", "--start-date", "2025-13-01"], 64,
     "Error: --start-date: '2025-13-01' is not a date (expected YYYY-MM-DD)"),
    (["etl", "--start-date", "2025-01-05", "--end-date", "2025-01-01"], 64,
     "Error: --end-date 2025-01-01 is before --start-date 2025-01-05"),
    (["etl", "--start-date", "2025-01-01", "--end-date", "2025-01-02"], 75,
     "Error: table 'raw_events' has no partition ds=2025-01-01 yet: not yet available, retry later"),
    (["demo-data", "--users", "0"], 64, "Error: --users must be at least 1 (got 0)"),
    (["demo-data", "--start-date", "tomorrow"], 64,
     "Error: --start-date: 'tomorrow' is not a date (expected YYYY-MM-DD)"),
    (["etl", "--start-date", "20250105"], 64, "Error: --start-date: '20250105' is not a date (expected YYYY-MM-DD)"),
    (["etl", "--start-date", "2025-01-01", "--end-date", "2025-W02-1"], 64,
     "Error: --end-date: '2025-W02-1' is not a date (expected YYYY-MM-DD)"),
    (["build-dataset", "--start-date", " 2025-01-05 ", "--end-date", "2025-01-06"], 64,
     "Error: --start-date: ' 2025-01-05 ' is not a date (expected YYYY-MM-DD)"),
    (["demo-data", "--start-date", "2025-01-05T00:00"], 64,
     "Error: --start-date: '2025-01-05T00:00' is not a date (expected YYYY-MM-DD)"),
    (["etl", "--config", "nowhere"], 78, "Error: config directory 'nowhere' does not exist (pass --config DIR)"),
])
def test_errors(workdir, runner, args, code, line):
    res = _invoke(runner, *args)
    assert res.exit_code == code, res.output
    assert res.stderr.splitlines()[0] == line


def test_contract_violation_exit_code(workdir, runner):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = workdir / "data" / "warehouse" / "raw_events" / "ds=2025-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["a"], "user_id": [1]}), folder / "bad.parquet")
    res = _invoke(runner, "etl", "--start-date", "2025-01-01", "--json")
    assert res.exit_code == 65
    assert res.stdout == ""
    assert res.stderr.splitlines()[0] == (
        f"Error: {folder / 'bad.parquet'}: column 'event_timestamp' is missing "
        "(expected timestamp (any unit/time zone) or a parsable ISO string)")


def test_help_has_examples(runner):
    for cmd in ("demo-data", "etl"):
        res = _invoke(runner, cmd, "--help")
        assert res.exit_code == 0
        assert f"Example: modelsvc {cmd}" in res.stdout


def _spoil_raw(workdir, day: str, change) -> str:
    """Demo data for 2025-01-01..02, then ``change`` applied to day ``day``'s raw file; returns its path."""
    import pyarrow.parquet as pq

    runner = CliRunner()
    assert _invoke(runner, "demo-data", "--users", "50", "--days", "2", "--seed", "1").exit_code == 0
    path = workdir / "data" / "warehouse" / "raw_events" / f"ds={day}" / "part-00000.parquet"
    pq.write_table(change(pq.read_table(path)), path, compression="NONE")
    return str(path)


def test_is_clicked_2_is_refused_by_etl_and_build_dataset(workdir, runner):
    import pyarrow as pa
    import pyarrow.compute as pc

    def clicks_of_2(t):
        imp = pc.equal(t.column("event_type"), "impression")
        return t.set_column(t.column_names.index("is_clicked"), "is_clicked",
                            pc.if_else(imp, pa.scalar(2, pa.int32()), t.column("is_clicked")))

    path = _spoil_raw(workdir, "2025-01-02", clicks_of_2)
    import pyarrow.parquet as pq

    n = pc.sum(pc.equal(pq.read_table(path).column("event_type"), "impression")).as_py()
    for args in (["etl", "--start-date", "2025-01-02"],
                 ["build-dataset", "--start-date", "2025-01-01", "--end-date", "2025-01-02"]):
        res = _invoke(runner, *args)
        assert res.exit_code == 65, res.output
        assert res.stderr.splitlines() == [
            f"Error: {path}: column 'is_clicked' has {n} value(s) other than 0 and 1 (e.g. 2)"]


def test_damaged_data_pages_exit_65_with_one_line(workdir, runner):
    from tests.raw_files import damage_data_pages

    path = _spoil_raw(workdir, "2025-01-02", lambda t: t)
    damage_data_pages(Path(path), "event_type")
    res = _invoke(runner, "etl", "--start-date", "2025-01-01", "--end-date", "2025-01-02")
    assert res.exit_code == 65, res.output
    assert len(res.stderr.splitlines()) == 1
    assert res.stderr.startswith(f"Error: {path}: the data cannot be read, the file is damaged (")
    assert not (workdir / "data" / "warehouse" / "user_features_precomputed").exists()


def test_event_outside_its_partition_day_exit_65(workdir, runner):
    from datetime import timedelta

    import pyarrow as pa

    moved = {}

    def one_day_later(t):
        ts = t.column("event_timestamp").to_pylist()
        moved["id"], moved["ts"] = t.column("event_id")[0].as_py(), ts[0] + timedelta(days=1)
        ts[0] = moved["ts"]
        return t.set_column(t.column_names.index("event_timestamp"), "event_timestamp",
                            pa.array(ts, t.schema.field("event_timestamp").type))

    path = _spoil_raw(workdir, "2025-01-01", one_day_later)
    res = _invoke(runner, "etl", "--start-date", "2025-01-01", "--end-date", "2025-01-02")
    assert res.exit_code == 65, res.output
    assert res.stderr.splitlines() == [
        f"Error: {path}: 1 event(s) lie outside the partition's UTC day ds=2025-01-01 (e.g. event "
        f"{moved['id']!r} at {moved['ts'].isoformat()}); store each event in the partition of its UTC date"]
