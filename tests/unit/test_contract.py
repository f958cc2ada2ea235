"""The raw-event contract (docs/data-contract.md) through both readers, `etl` and `build-dataset`: every accepted
encoding gives the same result, and data that breaks the contract is refused before anything is written."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from datetime import date, timezone
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from modelsvc.dataset import build_dataset, load_dataset
from modelsvc.demo import generate_demo_data
from modelsvc.errors import DataError
from modelsvc.etl import run_etl
from modelsvc.warehouse import open_warehouse
from tests.raw_files import damage_data_pages

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

START, END = "2025-01-01", "2025-01-03"

Encode = Callable[[pa.Array], pa.Array]


def _iso(offset: str | None) -> Encode:
    def encode(a: pa.Array) -> pa.Array:
        values = a.to_pylist()
        if offset is None:  # no offset: UTC
            return pa.array([v.astimezone(timezone.utc).replace(tzinfo=None).isoformat() for v in values])
        if offset == "Z":
            return pa.array([v.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z" for v in values])
        return pa.array([v.astimezone(zoneinfo.ZoneInfo(offset)).isoformat() for v in values])
    return encode


def _cast(typ: pa.DataType) -> Encode:
    return lambda a: a.cast(typ)


def _decimal(a: pa.Array) -> pa.Array:
    return pa.array([None if v is None else Decimal(str(v)) for v in a.to_pylist()], pa.decimal128(12, 2))


def _null_type(a: pa.Array) -> pa.Array:
    """Arrow's null type (what pandas writes for an all-None column): only for a file whose values are all null."""
    return pa.nulls(len(a)) if a.null_count == len(a) else a


# every encoding the data-contract table accepts, per column (the first is the canonical one)
ENCODINGS: dict[str, list[tuple[str, Encode]]] = {
    "event_id": [("string", _cast(pa.string())), ("large_string", _cast(pa.large_string())),
                 ("dictionary", lambda a: a.dictionary_encode())],
    "user_id": [("int64", _cast(pa.int64())), ("int8", _cast(pa.int8())), ("int16", _cast(pa.int16())),
                ("int32", _cast(pa.int32())), ("uint8", _cast(pa.uint8())), ("uint16", _cast(pa.uint16())),
                ("uint32", _cast(pa.uint32()))],
    "event_timestamp": [("timestamp_us_utc", _cast(pa.timestamp("us", tz="UTC"))),
                        ("timestamp_s_naive", _cast(pa.timestamp("s"))),
                        ("timestamp_ms_tokyo", _cast(pa.timestamp("ms", tz="Asia/Tokyo"))),
                        ("timestamp_ns_naive", _cast(pa.timestamp("ns"))),
                        ("iso_with_offset", _iso("America/St_Johns")), ("iso_without_offset", _iso(None)),
                        ("iso_z", _iso("Z"))],
    "event_type": [("string", _cast(pa.string())), ("large_string", _cast(pa.large_string())),
                   ("dictionary", lambda a: a.dictionary_encode())],
    "platform": [("string", _cast(pa.string())), ("all_null", _null_type),
                 ("large_string", _cast(pa.large_string())), ("dictionary", lambda a: a.dictionary_encode())],
    "purchase_value": [("double", _cast(pa.float64())), ("float32", _cast(pa.float32())),
                       ("int64", _cast(pa.int64())), ("int32", _cast(pa.int32())), ("decimal", _decimal),
                       ("all_null", _null_type)],
    "is_clicked": [("int32", _cast(pa.int32())), ("int8", _cast(pa.int8())), ("int64", _cast(pa.int64())),
                   ("uint8", _cast(pa.uint8())), ("bool", _cast(pa.bool_())), ("float64", _cast(pa.float64())),
                   ("all_null", _null_type)],
}
VARIANTS = max(len(v) for v in ENCODINGS.values())


def _raw_dir(settings, day: str) -> Path:
    return settings.paths.resolve("warehouse") / settings.tables.raw_events / f"ds={day}"


@pytest.fixture
def canonical(settings) -> dict[str, pa.Table]:
    """Demo events, made exact in every encoding (whole seconds, whole purchase values), page views without a
    platform; per day, one file per event type, so that each nullable column is all null in some file."""
    generate_demo_data(settings, users=40, days=3, start_date=START, seed=3)
    with open_warehouse(settings) as wh:
        raw = wh.read(settings.tables.raw_events)
    ts = pc.cast(pc.floor_temporal(raw.column("event_timestamp"), unit="second"), pa.timestamp("us", tz="UTC"))
    raw = raw.set_column(raw.column_names.index("event_timestamp"), "event_timestamp", ts)
    pv = pc.cast(pc.round(raw.column("purchase_value")), pa.float64())
    raw = raw.set_column(raw.column_names.index("purchase_value"), "purchase_value", pv)
    is_pv = pc.equal(raw.column("event_type"), "page_view")
    platform = pc.if_else(is_pv, pa.scalar(None, pa.string()), raw.column("platform"))
    raw = raw.set_column(raw.column_names.index("platform"), "platform", platform)
    files = {}
    for day in (START, "2025-01-02", END):
        for etype in ("page_view", "impression", "order"):
            mask = pc.and_(pc.equal(raw.column("ds"), day), pc.equal(raw.column("event_type"), etype))
            files[f"{day}/{etype}"] = raw.filter(mask).drop_columns(["ds"])
    return files


def _write(settings, files: dict[str, pa.Table], variant: int) -> dict[str, str]:
    import shutil

    shutil.rmtree(settings.paths.resolve("warehouse") / settings.tables.raw_events)
    chosen = {col: encs[variant % len(encs)] for col, encs in ENCODINGS.items()}
    for key, table in files.items():
        day, name = key.split("/")
        folder = _raw_dir(settings, day)
        folder.mkdir(parents=True, exist_ok=True)
        cols = {col: chosen[col][1](table.column(col).combine_chunks()) for col in ENCODINGS}
        pq.write_table(pa.table(cols), folder / f"{name}.parquet")
    return {col: enc[0] for col, enc in chosen.items()}


def _features(settings) -> dict[str, list[dict]]:
    with open_warehouse(settings) as wh:
        out = {}
        for table in (settings.tables.user_features, settings.tables.realtime_features):
            rows = wh.read(table).drop_columns(["created_timestamp"]).to_pylist()
            out[table] = sorted(rows, key=lambda r: (r["ds"], r["user_id"], r["event_timestamp"]))
    return out


def test_every_accepted_encoding_gives_the_same_features_and_dataset(settings, canonical):
    """Each column in each encoding of the data-contract table (mixed across columns, VARIANTS runs in all) gives
    the canonical feature rows from `etl` and the canonical dataset from `build-dataset`."""
    used = _write(settings, canonical, 0)
    run_etl(settings, start_date=START, end_date=END)
    want_features = _features(settings)
    want = build_dataset(settings, start_date=START, end_date=END, name="canonical")
    assert want.rows > 100
    assert 0 < want.label_rate < 1
    covered = {col: {name} for col, name in used.items()}
    for variant in range(1, VARIANTS):
        used = _write(settings, canonical, variant)
        run_etl(settings, start_date=START, end_date=END)
        assert _features(settings) == want_features, used
        got = build_dataset(settings, start_date=START, end_date=END, name=f"variant{variant}")
        assert (got.rows, got.label_rate, got.fingerprint) == (want.rows, want.label_rate, want.fingerprint), used
        for col, name in used.items():
            covered[col].add(name)
    assert covered == {col: {name for name, _ in encs} for col, encs in ENCODINGS.items()}


# -- refused data: one line naming the file, exit 65, before anything is written -----------------------------------

def _feature_files(settings) -> dict[str, bytes]:
    root = settings.paths.resolve("warehouse")
    return {str(f.relative_to(root)): f.read_bytes()
            for table in (settings.tables.user_features, settings.tables.realtime_features)
            for f in sorted((root / table).rglob("*")) if f.is_file()}


@pytest.fixture
def built(settings, canonical) -> dict[str, bytes]:
    """Canonical raw files, the features of every day computed once: what a refused run must leave alone."""
    _write(settings, canonical, 0)
    run_etl(settings, start_date=START, end_date=END)
    return _feature_files(settings)


def _rewrite(settings, key: str, change: Callable[[pa.Table], pa.Table]) -> Path:
    day, name = key.split("/")
    path = _raw_dir(settings, day) / f"{name}.parquet"
    pq.write_table(change(pq.read_table(path)), path, compression="NONE")
    return path


def _set(table: pa.Table, column: str, index: int, value: object) -> pa.Table:
    values = table.column(column).to_pylist()
    values[index] = value
    return table.set_column(table.column_names.index(column), column,
                            pa.array(values, table.schema.field(column).type))


def test_damaged_data_pages_are_refused_before_any_partition_is_replaced(settings, built):
    path = _rewrite(settings, f"{END}/page_view", lambda t: t)
    damage_data_pages(path, "event_type")
    with pytest.raises(DataError) as exc:
        run_etl(settings, start_date=START, end_date=END)
    assert exc.value.message.startswith(f"{path}: the data cannot be read, the file is damaged (")
    assert "\n" not in exc.value.message
    assert _feature_files(settings) == built
    with pytest.raises(DataError, match="the file is damaged"):
        build_dataset(settings, start_date=START, end_date=END)


def test_is_clicked_other_than_0_and_1_is_refused_by_etl_and_build_dataset(settings, built):
    def two_clicks(t: pa.Table) -> pa.Table:
        return _set(_set(t, "is_clicked", 0, 2), "is_clicked", 1, 2)

    path = _rewrite(settings, "2025-01-02/impression", two_clicks)
    message = f"{path}: column 'is_clicked' has 2 value(s) other than 0 and 1 (e.g. 2)"
    with pytest.raises(DataError) as exc:
        build_dataset(settings, start_date=START, end_date=END)
    assert exc.value.message == message
    with pytest.raises(DataError) as exc:
        run_etl(settings, start_date=START, end_date=END)
    assert exc.value.message == message
    assert _feature_files(settings) == built


def test_events_outside_their_partition_day_are_refused(settings, built, canonical):
    t = canonical[f"{START}/order"]
    moved = t.column("event_timestamp")[0].as_py().replace(day=2)  # an event of Jan 2nd stored in ds=2025-01-01
    event = t.column("event_id")[0].as_py()
    path = _rewrite(settings, f"{START}/order", lambda t: _set(t, "event_timestamp", 0, moved))
    with pytest.raises(DataError) as exc:
        run_etl(settings, start_date=END, end_date=END)  # START is in END's lookback: read, so checked
    assert exc.value.message == (
        f"{path}: 1 event(s) lie outside the partition's UTC day ds=2025-01-01 (e.g. event {event!r} at "
        f"{moved.isoformat()}); store each event in the partition of its UTC date")
    assert _feature_files(settings) == built


def test_a_dataset_whose_label_is_not_0_or_1_is_refused_by_load_dataset(settings, workdir):
    """What train reads: a dataset written by another tool (or before the check) with is_clicked 2."""
    from tests.datasets import as_single_file, write_synthetic_dataset

    manifest, _ = write_synthetic_dataset(settings, rows=200)
    path = as_single_file(manifest)  # an older version, one file
    table = pq.read_table(path)
    pq.write_table(_set(_set(_set(table, "is_clicked", 0, 2), "is_clicked", 5, 2), "is_clicked", 9, 2), path)
    with pytest.raises(DataError) as exc:
        load_dataset(settings)
    assert exc.value.message == (f"{path}: label 'is_clicked' has 3 value(s) other than 0 and 1 "
                                 "(e.g. 2)")


@pytest.mark.parametrize("column", list(ENCODINGS))
@pytest.mark.parametrize("compression", ["NONE", "snappy"])
def test_a_damaged_page_of_any_column_is_found_by_the_check(tmp_path, column, compression):
    """The check decodes every column: the ETL reads some, build-dataset others."""
    from datetime import datetime, timedelta

    from modelsvc.contract import check_parquet_files

    n = 5000
    t0 = datetime(2025, 1, 1, tzinfo=timezone.utc)
    table = pa.table({
        "event_id": [f"e{i}" for i in range(n)], "user_id": pa.array(range(n), pa.int64()),
        "event_timestamp": pa.array([t0 + timedelta(seconds=i) for i in range(n)], pa.timestamp("us", tz="UTC")),
        "event_type": ["page_view", "order", "impression"] * (n // 3) + ["order"] * (n % 3),
        "platform": ["ios", None] * (n // 2), "purchase_value": pa.array([i / 4 for i in range(n)]),
        "is_clicked": pa.array([i % 2 for i in range(n)], pa.int32()),
    })
    folder = tmp_path / "ds=2025-01-01"
    folder.mkdir()
    path = folder / "events.parquet"
    pq.write_table(table, path, compression=compression)
    check_parquet_files([path])  # intact: passes
    damage_data_pages(path, column)
    with pytest.raises(DataError, match="the data cannot be read, the file is damaged") as exc:
        check_parquet_files([path])
    assert exc.value.message.startswith(f"{path}: ")


def test_impressions_with_a_label_other_than_0_or_1_are_refused_whatever_the_engine():
    """What build-dataset checks on the rows any engine returns (Hive has no file check)."""
    from datetime import datetime

    from modelsvc.dataset import check_impressions

    table = pa.table({"event_id": ["a", "b", "c"], "user_id": [1, 2, 3],
                      "event_timestamp": [datetime(2025, 1, 2, tzinfo=timezone.utc)] * 3,
                      "is_clicked": pa.array([0, 2, 2], pa.int32()), "ds": ["2025-01-02"] * 3})
    with pytest.raises(DataError) as exc:
        check_impressions(table, label="is_clicked", where="impressions in 'raw_events' between a and b")
    assert exc.value.message == ("2 impressions in 'raw_events' between a and b have a label 'is_clicked' other "
                                 "than 0 and 1 (e.g. 2 in ds=2025-01-02)")
    check_impressions(table.set_column(3, "is_clicked", pa.array([0, 1, 1], pa.int32())), label="is_clicked",
                      where="x")


def test_impressions_outside_their_partition_day_are_refused_whatever_the_engine():
    from datetime import datetime

    from modelsvc.dataset import check_impressions

    table = pa.table({"event_id": ["a", "b"], "user_id": [1, 2],
                      "event_timestamp": pa.array([datetime(2025, 1, 2, 23, 59, tzinfo=timezone.utc),
                                                   datetime(2025, 1, 3, 0, 0, tzinfo=timezone.utc)],
                                                  pa.timestamp("us", tz="UTC")),
                      "is_clicked": [0, 1], "ds": ["2025-01-02", "2025-01-02"]})
    with pytest.raises(DataError) as exc:
        check_impressions(table, label="is_clicked", where="impressions in 'raw_events' between a and b")
    assert exc.value.message == ("1 impressions in 'raw_events' between a and b lie outside the UTC day of their "
                                 "partition (e.g. event 'b' at 2025-01-03 00:00:00+00:00 in ds=2025-01-02)")
    naive = table.set_column(2, "event_timestamp", table.column("event_timestamp").cast(pa.timestamp("us")))
    with pytest.raises(DataError, match=r"^1 impressions"):
        check_impressions(naive, label="is_clicked", where="impressions in 'raw_events' between a and b")
    # compared as dates, whatever the zone, unit and type of the columns: the UTC day counts
    zoned = table.set_column(2, "event_timestamp", table.column("event_timestamp").cast(
        pa.timestamp("ns", tz="America/New_York")))  # 'a' is 18:59 on 2025-01-02 in New York, 'b' 19:00
    with pytest.raises(DataError, match=r"^1 impressions .* \(e.g. event 'b' "):
        check_impressions(zoned, label="is_clicked", where="impressions in 'raw_events' between a and b")
    as_dates = table.set_column(4, "ds", pa.array([date(2025, 1, 2), date(2025, 1, 3)]))
    check_impressions(as_dates, label="is_clicked", where="x")
    check_impressions(as_dates.set_column(2, "event_timestamp", zoned.column("event_timestamp")), label="is_clicked",
                      where="x")
    before_1970 = pa.table({"event_id": ["a"], "user_id": [1], "is_clicked": [0], "ds": ["1969-12-31"],
                            "event_timestamp": pa.array([-1], pa.timestamp("us"))})
    check_impressions(before_1970, label="is_clicked", where="x")
    as_enum = table.set_column(4, "ds", pa.array(["2025-01-02", "2025-01-02"]).dictionary_encode())  # DuckDB ENUM
    with pytest.raises(DataError, match=r"^1 impressions .* \(e.g. event 'b' "):
        check_impressions(as_enum, label="is_clicked", where="impressions in 'raw_events' between a and b")
    as_numbers = table.set_column(4, "ds", pa.array([20090, 20091]))  # days since 1970 would match: text does not
    with pytest.raises(DataError, match=r"^2 impressions"):
        check_impressions(as_numbers, label="is_clicked", where="impressions in 'raw_events' between a and b")
    not_a_day = table.set_column(4, "ds", pa.array(["day one", "2025-01-02"]))  # compared as text: never matches
    with pytest.raises(DataError, match=r"^2 impressions .* \(e.g. event 'a' .* in ds=day one\)"):
        check_impressions(not_a_day, label="is_clicked", where="impressions in 'raw_events' between a and b")
