"""Feature ETL on the local engine: semantics (tests/etl_cases.py), idempotence, validation before writing."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelsvc.errors import ConfigError, DataError, RetryableError, UsageError
from modelsvc.etl import feature_sql, run_etl
from modelsvc.warehouse import open_warehouse
from tests.etl_cases import CASES, RANDOM_CASES, EtlCase, check_case, events_table, run_case, same_rows


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_semantics(case: EtlCase, settings):
    check_case(case, settings)


def _case(name: str) -> EtlCase:
    return next(c for c in CASES if c.name == name)


def _raw_dir(settings, day: str):
    return settings.paths.resolve("warehouse") / settings.tables.raw_events / f"ds={day}"


def _feature_files(settings) -> dict[str, bytes]:
    root = settings.paths.resolve("warehouse")
    out = {}
    for table in (settings.tables.user_features, settings.tables.realtime_features):
        for f in sorted((root / table).rglob("*")) if (root / table).exists() else []:
            if f.is_file():
                out[str(f.relative_to(root))] = f.read_bytes()
    return out


def test_rerun_gives_the_same_rows_and_moves_created_timestamp(settings):
    case = _case("window_edges")
    users1, rt1 = run_case(case, settings)
    with open_warehouse(settings) as wh:
        created1 = set(wh.read(settings.tables.user_features).column("created_timestamp").to_pylist())
    users2, rt2 = run_case(case, settings)
    with open_warehouse(settings) as wh:
        created2 = set(wh.read(settings.tables.user_features).column("created_timestamp").to_pylist())
    assert users1 == users2
    assert rt1 == rt2
    assert len(created1) == len(created2) == 1
    assert min(created2) > max(created1)
    assert same_rows(users2, case.user_features)


def test_report_counts(settings):
    case = _case("realtime_windows")
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table(case.events))
    report = run_etl(settings, start_date=case.start, end_date=case.end)
    assert report.days == 2
    assert report.engine == "duckdb"
    assert report.raw_start == date(2024, 2, 10)
    assert report.raw_events_read == len(case.events)
    assert report.rows_written == {settings.tables.user_features: 4, settings.tables.realtime_features: 4}
    assert report.events_per_s > 0


def test_missing_day_is_retry_later_and_nothing_is_written(settings):
    case = _case("no_orders_unknown_platform_nulls")
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table(case.events))
    with pytest.raises(RetryableError, match=r"table 'raw_events' has no partition ds=2024-03-11 yet") as exc:
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-11")
    assert exc.value.exit_code == 75  # not landed yet: a scheduler retries
    assert _feature_files(settings) == {}  # 2024-03-10 was fine, but validation comes before any write


def test_no_raw_table_at_all(settings):
    with pytest.raises(RetryableError, match=r"has no partition ds=2024-03-10"):
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-10")


def test_empty_day_is_a_data_error(settings):
    folder = _raw_dir(settings, "2024-03-10")
    folder.mkdir(parents=True)
    pq.write_table(events_table([]).drop_columns(["ds"]), folder / "empty.parquet")
    with pytest.raises(DataError, match=r"partition ds=2024-03-10 is empty"):
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-10")
    assert _feature_files(settings) == {}


def test_bad_ranges_are_usage_errors(settings):
    with pytest.raises(UsageError, match="is before --start-date"):
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-09")
    with pytest.raises(UsageError, match="is not a date"):
        run_etl(settings, start_date="2024-13-01", end_date=None)


def test_window_settings_are_checked(settings):
    settings.etl.orders_window_days = 40
    with pytest.raises(ConfigError, match=r"etl.orders_window_days"):
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-10")
    settings.etl.orders_window_days = 7
    settings.etl.realtime_window_minutes = 7
    with pytest.raises(ConfigError, match="realtime_window_minutes"):
        run_etl(settings, start_date="2024-03-10", end_date="2024-03-10")


# -- the input contract ----------------------------------------------------------------------------------------

def _write_good_then(settings, bad: pa.Table, day: str = "2024-03-09"):
    """Good events for the case, then one extra file ``bad`` in ``day``'s partition (a lookback day)."""
    case = _case("no_orders_unknown_platform_nulls")
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table(case.events))
    run_etl(settings, start_date=case.start, end_date=case.end)
    before = _feature_files(settings)
    path = _raw_dir(settings, day) / "dropped-by-user.parquet"
    pq.write_table(bad, path)
    return case, path, before


def _one_event(**override) -> pa.Table:
    cols = {
        "event_id": pa.array(["x1"]), "user_id": pa.array([9], pa.int64()),
        "event_timestamp": pa.array([datetime(2024, 3, 9, 12, tzinfo=timezone.utc)], pa.timestamp("us", tz="UTC")),
        "event_type": pa.array(["page_view"]), "platform": pa.array(["ios"]),
        "purchase_value": pa.array([None], pa.float64()), "is_clicked": pa.array([None], pa.int32()),
    }
    cols.update(override)
    return pa.table({k: v for k, v in cols.items() if v is not None})


@pytest.mark.parametrize(("bad", "message"), [
    (_one_event(purchase_value=None), r"column 'purchase_value' is missing"),
    (_one_event(user_id=pa.array(["9"])), r"column 'user_id' has type string"),
    (_one_event(event_timestamp=pa.array([1710000000], pa.int64())), r"column 'event_timestamp' has type int64"),
    (_one_event(purchase_value=pa.array(["12.5"])), r"column 'purchase_value' has type string"),
    (_one_event(event_timestamp=pa.array(["yesterday at noon"])),
     r"column 'event_timestamp' has 1 value\(s\) that do not parse as timestamps \(e.g. 'yesterday at noon'\)"),
    (_one_event(event_type=pa.array([None], pa.null())), r"column 'event_type' has type null"),
], ids=["missing-column", "user-id-string", "timestamp-int", "value-string", "timestamp-unparsable", "null-type"])
def test_contract_violations_name_file_and_column_and_write_nothing(settings, bad, message):
    case, path, before = _write_good_then(settings, bad)
    with pytest.raises(DataError, match=message) as exc:
        run_etl(settings, start_date=case.start, end_date=case.end)
    assert str(path) in exc.value.message
    assert exc.value.exit_code == 65
    assert _feature_files(settings) == before  # the previous feature partitions are untouched


def test_not_a_parquet_file(settings):
    case, path, before = _write_good_then(settings, _one_event())
    path.write_text("event_id,user_id\n1,2\n")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        run_etl(settings, start_date=case.start, end_date=case.end)
    assert _feature_files(settings) == before


def test_compatible_types_are_accepted(settings):
    """Each day's events split over files with different but compatible types give the canonical result."""
    case = _case("realtime_windows")
    table = events_table(case.events)
    for day in sorted(set(table.column("ds").to_pylist())):
        part = table.filter(pa.compute.equal(table.column("ds"), day)).drop_columns(["ds"])
        folder = _raw_dir(settings, day)
        folder.mkdir(parents=True)
        half = part.num_rows // 2
        a, b = part.slice(0, half), part.slice(half)
        pq.write_table(a, folder / "canonical.parquet")
        ts = b.column("event_timestamp")
        variant = pa.table({
            "event_id": b.column("event_id").cast(pa.large_string()),
            "user_id": b.column("user_id").cast(pa.int32()),
            # ISO strings with an offset: the same instants, written in another zone
            "event_timestamp": pa.array([v.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).isoformat()
                                         for v in ts.to_pylist()]),
            "event_type": b.column("event_type").dictionary_encode(),
            "platform": b.column("platform"),
            "purchase_value": b.column("purchase_value").cast(pa.float32()),
            "is_clicked": b.column("is_clicked").cast(pa.float64()),
            "extra_column": pa.array(["ignored"] * b.num_rows),
        })
        pq.write_table(variant, folder / "variant")
        ns = pa.table({**{c: a.column(c) for c in a.column_names},
                       "event_timestamp": a.column("event_timestamp").cast(pa.timestamp("ns")),
                       "user_id": a.column("user_id").cast(pa.int16()),
                       "platform": pa.nulls(a.num_rows), "is_clicked": pa.nulls(a.num_rows)}).slice(0, 0)
        pq.write_table(ns, folder / "empty-naive-ns")  # an empty file with naive ns timestamps and null columns
    run_etl(settings, start_date=case.start, end_date=case.end)
    with open_warehouse(settings) as wh:
        realtime = wh.read(settings.tables.realtime_features).to_pylist()
    from tests.etl_cases import _normal

    assert same_rows(_normal(realtime), case.realtime)



def test_nearly_unique_feature_columns_are_written_without_a_parquet_dictionary(settings):
    """A dictionary of per-day unique user ids (or averages) only costs encoding time; few-valued columns keep
    theirs (smaller files)."""
    case = RANDOM_CASES[0]
    run_case(case, settings)
    with open_warehouse(settings) as wh:
        for table in (settings.tables.user_features, settings.tables.realtime_features):
            files = wh.files(table, date.fromisoformat(case.end))
            assert files
            chunks = pq.read_metadata(files[0]).row_group(0)
            encodings = {chunks.column(i).path_in_schema: set(chunks.column(i).encodings)
                         for i in range(chunks.num_columns)}
            for column, found in encodings.items():
                dictionary = bool(found & {"RLE_DICTIONARY", "PLAIN_DICTIONARY"})
                assert dictionary == (column not in ("user_id", "avg_purchase_value_30d")), (table, column, found)

# -- the SQL for other engines ---------------------------------------------------------------------------------

def test_feature_sql_for_hive_avoids_duckdb_functions(settings):
    days = [date(2024, 3, 10), date(2024, 3, 11)]
    created = datetime(2024, 3, 12, tzinfo=timezone.utc)
    sql = feature_sql("hive", days=days, raw_table="raw_events", etl=settings.etl, created=created)
    text = sql.user_features + sql.realtime_features
    for duck_only in ("epoch_us", "arg_max", "to_timestamp", "TIMESTAMPTZ", "{'"):
        assert duck_only not in text
    assert "max_by(platform" in text
    assert "TIMESTAMP '2024-03-12 00:00:00.000000'" in text
    assert sql.raw_start == date(2024, 2, 10)
    assert "ds >= '2024-02-10'" in sql.user_features
    with pytest.raises(UsageError, match="contiguous"):
        feature_sql("duckdb", days=[days[0], date(2024, 3, 13)], raw_table="raw_events", etl=settings.etl,
                    created=created)
    with pytest.raises(UsageError, match="not a valid identifier"):
        feature_sql("duckdb", days=days, raw_table="raw; DROP", etl=settings.etl, created=created)


def test_only_the_local_writer_asks_for_sorted_rows(settings):
    created = datetime(2024, 3, 12, tzinfo=timezone.utc)
    for dialect in ("duckdb", "hive"):
        ordered = feature_sql(dialect, days=[date(2024, 3, 10)], raw_table="raw_events", etl=settings.etl,
                              created=created)
        unordered = feature_sql(dialect, days=[date(2024, 3, 10)], raw_table="raw_events", etl=settings.etl,
                                created=created, ordered=False)
        # the statement's own ORDER BY (window clauses order inside their OVER (...))
        assert ordered.user_features.count("\nORDER BY") == ordered.realtime_features.count("\nORDER BY") == 1
        assert "\nORDER BY" not in unordered.user_features + unordered.realtime_features


def test_rerun_after_raw_day_lost_its_page_views_empties_the_realtime_partition(settings):
    """Raw data replaced with a day without page views: the day's realtime windows must not survive."""
    from tests.etl_cases import ev

    day = "2024-03-09"
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table([
            ev("a", 1, f"{day}T10:01:00", "page_view"), ev("b", 1, f"{day}T10:02:00", "impression"),
        ]))
    run_etl(settings, start_date=day, end_date=day)
    with open_warehouse(settings) as wh:
        assert wh.read(settings.tables.realtime_features).num_rows == 1
        wh.write_partitions(settings.tables.raw_events, events_table([ev("b", 1, f"{day}T10:02:00", "impression")]))
    report = run_etl(settings, start_date=day, end_date=day)
    assert report.rows_written[settings.tables.realtime_features] == 0
    with open_warehouse(settings) as wh:
        assert wh.read(settings.tables.realtime_features).num_rows == 0
        assert wh.read(settings.tables.user_features).num_rows == 1


def test_latest_platform_ties_at_scale_go_to_the_largest_event_id(settings):
    """Many user-days whose latest events share one timestamp (with other platforms, null platforms and ids in
    every order) over two threads: last_seen_platform equals a brute-force reference on every row."""
    import random
    from datetime import timedelta

    rnd = random.Random(7)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    platforms = ["ios", "android", "web", "tv", None]
    events, n = [], 0
    for user in range(1, 1501):
        for day in range(3):
            if rnd.random() < 0.2:
                continue  # a day without events: the platform comes from an earlier day
            latest = start + timedelta(days=day, seconds=rnd.randrange(1, 86_000))
            times = [latest] * rnd.randint(1, 4) + [latest - timedelta(seconds=rnd.randint(1, 500))
                                                    for _ in range(rnd.randint(0, 3))]
            for when in times:
                n += 1
                # ids are not in timestamp or file order: the largest id is anywhere among the tied events
                events.append({"event_id": f"e{rnd.randrange(10**9):09d}-{n}", "user_id": user,
                               "event_timestamp": when, "event_type": "page_view",
                               "platform": rnd.choice(platforms), "purchase_value": None, "is_clicked": None})
    rnd.shuffle(events)
    expected: dict[tuple[int, str], str | None] = {}
    for d in range(3):
        snapshot = start + timedelta(days=d + 1)
        ds = (start + timedelta(days=d)).date().isoformat()
        best: dict[int, tuple] = {}
        for e in events:
            if e["platform"] is not None and e["event_timestamp"] < snapshot:
                key = (e["event_timestamp"], e["event_id"])
                if e["user_id"] not in best or key > best[e["user_id"]][0]:
                    best[e["user_id"]] = (key, e["platform"])
        for user, (_, platform) in best.items():
            expected[(user, ds)] = platform
    settings.warehouse.threads = 2
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table(events))
    run_etl(settings, start_date="2024-05-01", end_date="2024-05-03")
    with open_warehouse(settings) as wh:
        rows = wh.read(settings.tables.user_features, columns=["user_id", "ds", "last_seen_platform"]).to_pylist()
    got = {(r["user_id"], r["ds"]): r["last_seen_platform"] for r in rows}
    # the case is meaningful: many snapshots hinge on a tie between different platforms
    latest: dict[tuple[int, str], set] = {}
    for e in events:
        if e["platform"] is not None:
            latest.setdefault((e["user_id"], e["event_timestamp"]), set()).add(e["platform"])
    assert sum(len(p) > 1 for p in latest.values()) > 500
    assert {k: v for k, v in got.items() if v is not None} == expected


@pytest.mark.parametrize("case", RANDOM_CASES, ids=lambda c: c.name)
def test_random_events_match_a_brute_force_reference(case: EtlCase, settings):
    """Every feature of every row against the contract computed by brute force, on random events full of edges;
    two DuckDB threads."""
    settings.warehouse.threads = 2
    assert len(case.events) > 1000
    assert len(case.user_features) > 300
    assert len(case.realtime) > 300
    check_case(case, settings)



@pytest.mark.parametrize(("lookback", "orders_days", "purchase_days"), [(12, 3, 10), (9, 9, 4), (5, 5, 5)])
def test_other_window_sizes_match_a_brute_force_reference(settings, lookback, orders_days, purchase_days):
    """Windows shorter than the run and than each other (and all equal): the user features roll each day's
    partial aggregates in at its day and out when it leaves each window; every row against brute force."""
    from tests.etl_cases import random_case

    case = random_case(lookback * 100 + orders_days * 10 + purchase_days, users=80, lookback=lookback,
                       orders_days=orders_days, purchase_days=purchase_days)
    settings.etl.lookback_days = lookback
    settings.etl.orders_window_days = orders_days
    settings.etl.purchase_window_days = purchase_days
    settings.warehouse.threads = 2
    assert len(case.user_features) > 300
    check_case(case, settings)

def test_a_day_without_page_views_has_an_empty_realtime_partition(settings):
    """docs/data-contract.md: the day was computed, so its realtime partition exists, with no rows."""
    from tests.etl_cases import ev

    day = "2024-03-09"
    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table([ev("b", 1, f"{day}T10:02:00", "impression")]))
    run_etl(settings, start_date=day, end_date=day)
    with open_warehouse(settings) as wh:
        assert wh.partitions(settings.tables.realtime_features) == [date(2024, 3, 9)]
        assert wh.read(settings.tables.realtime_features).num_rows == 0
