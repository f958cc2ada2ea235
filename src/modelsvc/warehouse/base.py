"""The interface every warehouse engine implements.

Tables are partitioned by the string column ``ds`` (``YYYY-MM-DD``). Data crosses the interface as
``pyarrow.Table`` with UTC timestamps. Engines own *where* SQL runs; the feature logic itself is shared
(see ``modelsvc.etl``), so DuckDB and Hive compute the same rows.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from modelsvc.errors import DataError, UsageError

if TYPE_CHECKING:
    import pyarrow as pa

    from modelsvc.config import Settings
    from modelsvc.etl import FeatureSql
    from modelsvc.progress import Task

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_identifier(name: str, *, what: str = "table name") -> str:
    """Refuse anything that is not a plain SQL identifier before it can reach a query."""
    if not isinstance(name, str) or not _IDENT.match(name):
        raise UsageError(f"{what} {name!r} is not a valid identifier (letters, digits and _ only)")
    return name

# feature columns whose values are nearly all distinct within a day (one row per user and day or window); the
# others (timestamps, counts, platforms) take few values and compress well in a Parquet dictionary
NEARLY_UNIQUE = ("user_id", "avg_purchase_value_30d")


def split_by_day(ds: pa.ChunkedArray | pa.Array) -> dict[str, tuple[int, int] | pa.Array]:
    """Where the rows of each ``ds`` value are: ``(offset, length)`` of its run when the column is grouped by day
    (what the feature SQL's ordering by day gives, so slices are zero-copy), else a boolean mask per day. Keys are
    the values as strings; nulls are left out."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(ds, pa.Array):
        ds = pa.chunked_array([ds])
    if pa.types.is_dictionary(ds.type):  # e.g. DuckDB's ENUM: its small integer codes, then their strings
        ds = ds.unify_dictionaries()
        names = pc.cast(ds.chunk(0).dictionary, pa.string()).to_pylist() if ds.num_chunks else []
        keys = pa.chunked_array([c.indices for c in ds.chunks], type=ds.type.index_type)
    else:
        keys = pc.cast(ds, pa.string())
        names = None

    def name(key: Any) -> str:
        return key if names is None else names[key]

    runs: dict[str, tuple[int, int] | pa.Array] = {}
    offset = 0
    for item in pc.value_counts(keys).to_pylist():  # distinct values in order of first appearance
        value, n = item["values"], item["counts"]
        if value is None or pc.count_distinct(keys.slice(offset, n)).as_py() != 1:  # not grouped: a mask per day
            return {name(v): pc.equal(keys, v) for v in pc.unique(keys).to_pylist() if v is not None}
        runs[name(value)] = (offset, n)
        offset += n
    return runs


def partition_day(value: str, *, where: str) -> date:
    """A ``ds`` value of rows to write → its day. Only the canonical ``YYYY-MM-DD`` is accepted: Python also reads
    '20240101', which would be a second spelling of one partition (its rows would overwrite the other spelling's,
    or match no partition insert). ``where`` starts the DataError's message."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        day = None
    if day is None or day.isoformat() != value:
        raise DataError(f"{where}: 'ds' value {value!r} is not a YYYY-MM-DD date")
    return day


def take_day(table: pa.Table, where: tuple[int, int] | pa.Array) -> pa.Table:
    """The rows of one day of ``table`` as located by :func:`split_by_day`."""
    if isinstance(where, tuple):
        return table.slice(*where)
    return table.filter(where)


class Warehouse(ABC):
    """One SQL engine holding the raw events and the feature tables."""

    engine: str = "abstract"
    dialect: str = "duckdb"  # the entry of modelsvc.etl.DIALECTS used to spell the shared feature SQL

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @abstractmethod
    def table_exists(self, table: str) -> bool:
        """True when ``table`` exists (locally: its folder has at least one partition)."""

    @abstractmethod
    def partitions(self, table: str) -> list[date]:
        """The ``ds`` partitions of ``table``, sorted; [] when the table is missing."""

    @abstractmethod
    def read(self, table: str, *, start: date | None = None, end: date | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        """Rows of the partitions in [start, end] (inclusive, pruned), with ``ds`` as a column."""

    @abstractmethod
    def read_raw(self, *, start: date | None = None, end: date | None = None,
                 columns: Sequence[str] | None = None) -> pa.Table:
        """Like :meth:`read` for the raw-event table (``settings.tables.raw_events``), after the raw-event
        contract check (docs/data-contract.md): columns in their canonical types, a DataError otherwise."""

    @abstractmethod
    def write_partitions(self, table: str, data: pa.Table, *, days: Sequence[date] = (),
                         plain: Sequence[str] = ()) -> list[date]:
        """Replace, atomically and per partition, every ``ds`` present in ``data`` and every day in ``days`` (a listed
        day without rows ends up with no rows: stale data never survives a rewrite); returns the days replaced.
        ``plain`` names columns whose values are nearly all distinct: an engine writing Parquet itself encodes them
        without a dictionary (one would only cost time); others ignore it."""

    def write_features(self, sql: Callable[[Sequence[date], bool], FeatureSql], days: Sequence[date], *,
                       task: Task | None = None) -> dict[str, int]:
        """Compute the feature tables for ``days`` and replace their partitions of every one of ``days`` (a day
        without rows ends up empty); returns the rows written per table. ``sql(days, ordered)`` gives the
        feature SELECTs (:func:`modelsvc.etl.feature_sql` bound to the run); ``task`` is advanced by days.

        Default: the rows come to the client (one query per table for all ``days``) and are written with
        :meth:`write_partitions`. Engines computing where the data lives override it."""
        tables = self.settings.tables
        statements = sql(days, True)  # ordered by day: the local writer slices each day's rows without copying
        users, realtime = self.query(statements.user_features), self.query(statements.realtime_features)
        self.write_partitions(tables.user_features, users, days=days, plain=NEARLY_UNIQUE)
        self.write_partitions(tables.realtime_features, realtime, days=days, plain=NEARLY_UNIQUE)
        if task is not None:
            task.advance(len(days), day=f"{days[0]}..{days[-1]}" if len(days) > 1 else str(days[0]),
                         user_rows=users.num_rows, realtime_rows=realtime.num_rows)
        return {tables.user_features: users.num_rows, tables.realtime_features: realtime.num_rows}

    def query(self, sql: str) -> pa.Table:
        """Run one SELECT (e.g. the shared feature SQL of ``modelsvc.etl``) and return its rows."""
        raise NotImplementedError(f"the {self.engine} engine cannot run SQL queries")

    def check_raw(self, table: str, *, start: date, end: date) -> dict[date, int]:
        """Check the raw-event contract of the partitions in [start, end] before any compute and return the row
        count of each partition found. Default: counts only, with one query; engines add their schema checks."""
        check_identifier(table)
        rows = self.query(f"SELECT ds, COUNT(*) AS n FROM {table} WHERE ds >= '{start.isoformat()}' "
                          f"AND ds <= '{end.isoformat()}' GROUP BY ds").to_pylist()
        return {date.fromisoformat(str(r["ds"])): int(r["n"]) for r in rows}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
