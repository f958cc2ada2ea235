"""LocalWarehouse: partition listing, pruned reads, atomic partition replacement."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from modelsvc.errors import DataError, NotFoundError, UsageError
from modelsvc.warehouse import open_warehouse
from modelsvc.warehouse.local import LocalWarehouse


def _table(rows: dict[str, list]) -> pa.Table:
    return pa.table({"user_id": pa.array(rows["user_id"], pa.int64()), "v": pa.array(rows["v"], pa.float64()),
                     "ds": pa.array(rows["ds"], pa.string())})


@pytest.fixture
def wh(settings):
    with open_warehouse(settings) as w:
        assert isinstance(w, LocalWarehouse)
        yield w


def test_write_list_and_pruned_read(wh):
    days = wh.write_partitions("t", _table({"user_id": [1, 2, 3], "v": [1.0, 2.0, 3.0],
                                            "ds": ["2024-01-02", "2024-01-01", "2024-01-03"]}))
    assert days == [date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)]
    assert wh.partitions("t") == days
    assert wh.table_exists("t")
    assert not wh.table_exists("nope")
    got = wh.read("t", start=date(2024, 1, 2), end=date(2024, 1, 3))
    assert sorted(got.column("user_id").to_pylist()) == [1, 3]
    assert set(got.column("ds").to_pylist()) == {"2024-01-02", "2024-01-03"}
    assert wh.read("t", columns=["v"]).column_names == ["v"]


def test_partitions_ignore_foreign_folders_and_files(wh):
    wh.write_partitions("t", _table({"user_id": [1], "v": [1.0], "ds": ["2024-01-01"]}))
    base = wh.table_path("t")
    (base / "not_a_partition").mkdir()
    (base / "ds=garbage").mkdir()
    (base / ".tmp-ds=2024-01-05-abc").mkdir()
    (base / "ds=2024-01-01" / "_SUCCESS").write_text("")
    (base / "ds=2024-01-01" / ".part.crc").write_text("x")
    assert wh.partitions("t") == [date(2024, 1, 1)]
    assert wh.read("t").num_rows == 1


def test_user_files_with_any_name_are_read(wh):
    folder = wh.table_path("t") / "ds=2024-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": [1, 2], "v": [0.5, 1.5]}), folder / "export-from-app")
    pq.write_table(pa.table({"user_id": [3], "v": [2.5]}), folder / "more.parquet")
    assert sorted(wh.read("t").column("user_id").to_pylist()) == [1, 2, 3]


def test_rewrite_replaces_only_the_days_written(wh):
    wh.write_partitions("t", _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", "2024-01-02"]}))
    wh.write_partitions("t", _table({"user_id": [9], "v": [9.0], "ds": ["2024-01-02"]}))
    got = wh.read("t").to_pylist()
    assert sorted((r["ds"], r["user_id"]) for r in got) == [("2024-01-01", 1), ("2024-01-02", 9)]
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == ["ds=2024-01-01", "ds=2024-01-02"]


def _second_file_fails(monkeypatch) -> dict[str, int]:
    """Make the second Parquet file written fail half-way (disk full); returns the call counter."""
    calls = {"n": 0}
    real = pq.write_table

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    monkeypatch.setattr(pq, "write_table", failing)
    return calls


def test_interrupted_write_leaves_the_old_partitions(wh, monkeypatch):
    wh.write_partitions("t", _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", "2024-01-02"]}))
    _second_file_fails(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        wh.write_partitions("t", _table({"user_id": [7, 8], "v": [7.0, 8.0], "ds": ["2024-01-01", "2024-01-02"]}))
    monkeypatch.undo()
    got = sorted((r["ds"], r["user_id"]) for r in wh.read("t").to_pylist())
    assert got == [("2024-01-01", 1), ("2024-01-02", 2)]  # neither day replaced: both were staged first
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == ["ds=2024-01-01", "ds=2024-01-02"]


def test_a_hole_left_by_the_old_rename_swap_is_put_back_by_the_next_write_not_by_readers(wh):
    """The rename-based writer of earlier versions could be killed between its two renames; readers now never
    write, the next write of the table repairs it (and deletes that writer's staged leftovers)."""
    import os

    wh.write_partitions("t", _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", "2024-01-02"]}))
    part = wh.partition_path("t", date(2024, 1, 1))
    os.replace(part, part.parent / ".old-ds=2024-01-01-deadbeef")  # the old writer, killed after its first rename
    (part.parent / ".tmp-ds=2024-01-01-deadbeef").mkdir()
    before = sorted(p.name for p in wh.table_path("t").iterdir())
    assert wh.partitions("t") == [date(2024, 1, 2)]
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == before  # the reader changed nothing
    wh.write_partitions("t", _table({"user_id": [9], "v": [9.0], "ds": ["2024-01-02"]}))
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == ["ds=2024-01-01", "ds=2024-01-02"]
    assert sorted((r["ds"], r["user_id"]) for r in wh.read("t").to_pylist()) == [("2024-01-01", 1),
                                                                                   ("2024-01-02", 9)]


def test_write_refuses_rows_without_ds(wh):
    with pytest.raises(DataError, match="no 'ds' column"):
        wh.write_partitions("t", pa.table({"user_id": [1]}))
    with pytest.raises(DataError, match="null 'ds'"):
        wh.write_partitions("t", pa.table({"user_id": [1, 2], "ds": pa.array(["2024-01-01", None])}))
    assert not wh.table_exists("t") or wh.partitions("t") == []


def test_bad_names_and_missing_tables(wh):
    with pytest.raises(UsageError, match="not a valid identifier"):
        wh.partitions("../etc")
    with pytest.raises(NotFoundError, match="table 'missing' not found"):
        wh.read("missing")


def test_query_sees_tables_by_name(wh):
    wh.write_partitions("t", _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", "2024-01-02"]}))
    got = wh.query("SELECT ds, sum(v) AS s FROM t GROUP BY ds ORDER BY ds").to_pylist()
    assert got == [{"ds": "2024-01-01", "s": 1.0}, {"ds": "2024-01-02", "s": 2.0}]


def test_date_typed_ds_is_written_as_a_string_partition(wh):
    data = pa.table({"user_id": [1], "ds": pa.array([date(2024, 1, 5)], pa.date32())})
    assert wh.write_partitions("t", data) == [date(2024, 1, 5)]
    assert wh.read("t").column("ds").to_pylist() == ["2024-01-05"]


def test_split_by_day_slices_grouped_days_and_masks_interleaved_ones():
    from modelsvc.warehouse.base import split_by_day, take_day

    grouped = _table({"user_id": [1, 2, 3, 4], "v": [0.0] * 4, "ds": ["2024-01-02", "2024-01-02", "2024-01-01",
                                                                       "2024-01-03"]})
    where = split_by_day(grouped.column("ds"))
    assert where == {"2024-01-02": (0, 2), "2024-01-01": (2, 1), "2024-01-03": (3, 1)}
    interleaved = _table({"user_id": [1, 2, 3], "v": [0.0] * 3, "ds": ["2024-01-02", "2024-01-01", "2024-01-02"]})
    where = split_by_day(interleaved.column("ds"))
    assert take_day(interleaved, where["2024-01-02"]).column("user_id").to_pylist() == [1, 3]
    assert take_day(interleaved, where["2024-01-01"]).column("user_id").to_pylist() == [2]
    dates = pa.array([date(2024, 1, 1), date(2024, 1, 1)], pa.date32())
    assert split_by_day(dates) == {"2024-01-01": (0, 2)}
    # a dictionary ds (what DuckDB returns for the feature SQL's ENUM), its chunks with different dictionaries
    chunks = pa.chunked_array([pa.array(["2024-01-02", "2024-01-02"]).dictionary_encode(),
                               pa.array(["2024-01-01", "2024-01-03"]).dictionary_encode()])
    assert split_by_day(chunks) == {"2024-01-02": (0, 2), "2024-01-01": (2, 1), "2024-01-03": (3, 1)}
    where = split_by_day(pa.array(["2024-01-02", "2024-01-01", "2024-01-02"]).dictionary_encode())
    assert set(where) == {"2024-01-02", "2024-01-01"}
    assert take_day(interleaved, where["2024-01-02"]).column("user_id").to_pylist() == [1, 3]


def test_many_days_are_staged_in_parallel_and_listed_empty_days_are_emptied(wh):
    days = [f"2024-02-{d:02d}" for d in range(1, 21)]
    rows = {"user_id": list(range(200)), "v": [float(i) for i in range(200)], "ds": [days[i // 10] for i in range(200)]}
    wh.write_partitions("t", _table(rows))
    wh.write_partitions("t", _table({"user_id": [1000], "v": [1.0], "ds": ["2024-02-01"]}),
                        days=[date(2024, 2, 1), date(2024, 2, 2)])
    got = {}
    for r in wh.read("t").to_pylist():
        got.setdefault(r["ds"], []).append(r["user_id"])
    assert got["2024-02-01"] == [1000]
    assert "2024-02-02" not in got
    assert all(got[days[d]] == list(range(10 * d, 10 * d + 10)) for d in range(2, 20))
    assert pq.read_table(wh.partition_path("t", date(2024, 2, 2)) / "part-00000.parquet").num_rows == 0


def test_a_failed_write_stops_the_files_not_yet_started(wh, monkeypatch):
    wh.settings.warehouse.threads = 1
    days = [f"2024-03-{d:02d}" for d in range(1, 21)]
    wh.write_partitions("t", _table({"user_id": list(range(20)), "v": [0.0] * 20, "ds": days}))
    calls = _second_file_fails(monkeypatch)
    with pytest.raises(OSError, match="disk full"):
        wh.write_partitions("t", _table({"user_id": list(range(100, 120)), "v": [1.0] * 20, "ds": days}))
    monkeypatch.undo()
    assert calls["n"] < 5  # the other 18 partitions were cancelled, not written and thrown away
    assert sorted(r["user_id"] for r in wh.read("t").to_pylist()) == list(range(20))
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == [f"ds={d}" for d in days]


@pytest.mark.parametrize("bad", ["20240101", "2024-1-1", "yesterday", "2024-01-01T00:00:00"])
def test_ds_values_must_be_canonical_dates(wh, bad):
    """A second spelling of a day would be a second name for one partition: refused, nothing written."""
    rows = _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", bad]})
    with pytest.raises(DataError, match=f"'ds' value '{bad}' is not a YYYY-MM-DD date"):
        wh.write_partitions("t", rows)
    assert not wh.table_exists("t")


class _Killed(BaseException):
    """Stands for SIGKILL: no handler of the writer runs (it is not an Exception)."""


def _days_as_read(wh, table: str) -> dict[str, list[int]]:
    """Each day's user_ids as readers see them: a plain DuckDB glob (it never writes), and modelsvc's listing
    (which adds the empty partitions: []); both must list the same days."""
    import duckdb

    glob = wh.table_path(table) / "ds=*" / "*.parquet"
    rows = duckdb.sql(f"SELECT ds, list(user_id ORDER BY user_id) FROM read_parquet('{glob}', "
                      "hive_partitioning = true, hive_types = {'ds': VARCHAR}) GROUP BY ds").fetchall()
    seen = dict(rows)
    listed = [d.isoformat() for d in wh.partitions(table)]
    assert set(seen) <= set(listed), (seen, listed)
    return {day: seen.get(day, []) for day in listed}


def test_a_write_stopped_at_any_rename_leaves_every_partition_whole(wh, monkeypatch):
    """Kill the writer at its 1st, 2nd, … rename or exchange: every reader sees each day whole, old or new."""
    import os

    import modelsvc.warehouse.local as local

    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    old = _table({"user_id": [1, 2, 3], "v": [0.0] * 3, "ds": days})
    new = _table({"user_id": [11, 12, 13, 14], "v": [0.0] * 4, "ds": [*days, "2024-01-04"]})
    whole = {"2024-01-01": ([1], [11]), "2024-01-02": ([2], [12]), "2024-01-03": ([3], [13]),
             "2024-01-04": ([], [14])}
    stop_at = 0
    while True:
        stop_at += 1
        wh.write_partitions("t", old, days=[date(2024, 1, 4)])  # 2024-01-04: an empty partition
        calls = {"n": 0}

        def killing(real, calls=calls, stop_at=stop_at):
            def call(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == stop_at:
                    raise _Killed
                return real(*args, **kwargs)
            return call

        monkeypatch.setattr(os, "rename", killing(os.rename))
        monkeypatch.setattr(os, "replace", killing(os.replace))
        if hasattr(local, "exchange"):
            monkeypatch.setattr(local, "exchange", killing(local.exchange))
        try:
            wh.write_partitions("t", new)
            finished = True
        except _Killed:
            finished = False
        monkeypatch.undo()
        seen = _days_as_read(wh, "t")
        assert sorted(seen) == [*days, "2024-01-04"], (stop_at, seen)
        for day, ids in seen.items():
            assert ids in whole[day], (stop_at, day, ids)
        if finished:
            break
    assert stop_at > 4  # every day's swap was stopped once


def test_without_an_atomic_exchange_a_hole_left_by_a_crash_is_put_back_by_the_next_write(wh, monkeypatch):
    """File systems without an atomic exchange swap by two renames; a crash between them is the one
    non-atomic moment: the next write of the table puts a whole partition back."""
    import os

    import modelsvc.warehouse.local as local

    wh.write_partitions("t", _table({"user_id": [1, 2], "v": [1.0, 2.0], "ds": ["2024-01-01", "2024-01-02"]}))
    monkeypatch.setattr(local, "exchange", lambda a, b: False)
    real, calls = os.rename, {"n": 0}

    def rename(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # the first day's second rename
            raise _Killed
        return real(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(_Killed):
        wh.write_partitions("t", _table({"user_id": [7, 8], "v": [7.0, 8.0], "ds": ["2024-01-01", "2024-01-02"]}))
    monkeypatch.setattr(os, "rename", real)
    assert wh.partitions("t") == [date(2024, 1, 2)]  # the hole, until the next write
    wh.write_partitions("t", _table({"user_id": [9], "v": [9.0], "ds": ["2024-01-02"]}))
    assert _days_as_read(wh, "t") in ({"2024-01-01": [1], "2024-01-02": [9]},
                                      {"2024-01-01": [7], "2024-01-02": [9]})


def test_the_next_write_deletes_leftovers_and_keeps_replaced_partitions_for_a_while(wh, monkeypatch):
    import os
    import time

    staging = wh.staging_path("t")
    wh.write_partitions("t", _table({"user_id": [1], "v": [1.0], "ds": ["2024-01-01"]}))
    assert [p.name for p in staging.iterdir()] == [".lock"]  # a first write replaces nothing: no run folder
    wh.write_partitions("t", _table({"user_id": [2], "v": [2.0], "ds": ["2024-01-01"]}))
    (replaced,) = staging.glob("[!.]*")  # the replaced partition, kept for readers that listed it
    assert pq.read_table(replaced / "ds=2024-01-01").column("user_id").to_pylist() == [1]
    killed = staging / "1-deadbeef" / "ds=2024-01-05"  # a run killed while staging
    killed.mkdir(parents=True)
    (wh.table_path("t") / ".tmp-ds=2024-01-05-abc").mkdir()  # the rename-based writer's leftover
    wh.write_partitions("t", _table({"user_id": [3], "v": [3.0], "ds": ["2024-01-02"]}))
    assert not killed.parent.exists()
    assert replaced.exists()
    assert sorted(p.name for p in wh.table_path("t").iterdir()) == ["ds=2024-01-01", "ds=2024-01-02"]
    past = time.time() - wh.settings.warehouse.keep_replaced_s - 1
    os.utime(replaced / "swapped", (past, past))
    wh.write_partitions("t", _table({"user_id": [4], "v": [4.0], "ds": ["2024-01-03"]}))
    assert not replaced.exists()  # older than warehouse.keep_replaced_s
    assert sorted(r["user_id"] for r in wh.read("t").to_pylist()) == [2, 3, 4]


def test_writers_of_one_table_take_turns(wh):
    """Two writers at once: each waits for the other (neither deletes the other's staged run), every day whole."""
    import threading

    days = [f"2024-05-{d:02d}" for d in range(1, 11)]
    errors = []

    def writer(uid: int) -> None:
        try:
            for _ in range(5):
                wh.write_partitions("t", _table({"user_id": [uid] * 10, "v": [0.0] * 10, "ds": days}))
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(uid,)) for uid in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    seen = _days_as_read(wh, "t")
    assert sorted(seen) == days
    assert all(ids in ([1], [2]) for ids in seen.values())


def test_read_raw_checks_the_contract_and_gives_the_canonical_types(wh):
    """read() gives the stored types of any table; read_raw() is the raw-event table after the contract check."""
    raw = wh.settings.tables.raw_events
    rows = pa.table({"event_id": ["a", "b"], "user_id": pa.array([1, 2], pa.int32()),
                     "event_timestamp": pa.array([1704103200000, 1704106800000], pa.timestamp("ms", tz="Europe/Paris")),
                     "event_type": ["impression", "order"], "platform": ["ios", None],
                     "purchase_value": [None, 3.5], "is_clicked": [True, None], "ds": ["2024-01-01"] * 2})
    wh.write_partitions(raw, rows)
    assert wh.read(raw).schema.field("is_clicked").type == pa.bool_()
    got = wh.read_raw(columns=["user_id", "event_timestamp", "is_clicked"])
    assert [f.type for f in got.schema] == [pa.int64(), pa.timestamp("us", tz="UTC"), pa.int32()]
    assert got.column("is_clicked").to_pylist() == [1, None]
    wh.write_partitions(raw, rows.drop_columns(["event_type"]))
    with pytest.raises(DataError, match="column 'event_type' is missing"):
        wh.read_raw()
