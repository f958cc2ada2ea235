"""The raw-event input contract (docs/data-contract.md): column types, what is accepted, what is refused.

Checks look at Parquet footers only (``pyarrow.parquet.read_schema``), except for a string ``event_timestamp``
column, whose values must parse: that one column of that one file is read and parsed. Every failure is a
:class:`DataError` naming the file and the column.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelsvc.errors import DataError

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_TYPES = ("page_view", "order", "impression")
KNOWN_PLATFORMS = ("ios", "android", "web")

# column -> (canonical DuckDB type, description for messages)
RAW_COLUMNS: dict[str, tuple[str, str]] = {
    "event_id": ("VARCHAR", "string"),
    "user_id": ("BIGINT", "integer (int64; smaller ints accepted)"),
    "event_timestamp": ("TIMESTAMPTZ", "timestamp (any unit/time zone) or a parsable ISO string"),
    "event_type": ("VARCHAR", "string"),
    "platform": ("VARCHAR", "string"),
    "purchase_value": ("DOUBLE", "floating point (ints and decimals accepted)"),
    "is_clicked": ("INTEGER", "integer 0/1 (bool, or float as pandas writes ints with nulls, accepted)"),
}
# columns that may be all-null in a file (pandas writes an all-None column with Arrow's null type)
NULLABLE = {"platform", "purchase_value", "is_clicked"}


@dataclass(frozen=True)
class ColumnPlan:
    """How one column of one file is read into the canonical schema: ``kind`` is 'same', 'cast', 'parse' or
    'null' (an all-null column)."""

    name: str
    kind: str


def _kind(name: str, typ: pa.DataType) -> str | None:
    """'same'/'cast'/'parse'/'null' when ``typ`` is acceptable for ``name``; None when it is refused."""
    import pyarrow.types as t

    if t.is_dictionary(typ):
        typ = typ.value_type
    is_str = t.is_string(typ) or t.is_large_string(typ) or getattr(t, "is_string_view", lambda _: False)(typ)
    if t.is_null(typ):
        return "null" if name in NULLABLE else None
    if name in {"event_id", "event_type", "platform"}:
        return ("same" if t.is_string(typ) else "cast") if is_str else None
    if name == "user_id":
        if t.is_int64(typ):
            return "same"
        if t.is_integer(typ) and not t.is_uint64(typ):
            return "cast"
        return None
    if name == "event_timestamp":
        if t.is_timestamp(typ):
            return "cast"
        return "parse" if is_str else None
    if name == "purchase_value":
        if t.is_float64(typ):
            return "same"
        return "cast" if (t.is_floating(typ) or t.is_integer(typ) or t.is_decimal(typ)) else None
    if name == "is_clicked":
        if t.is_int32(typ):
            return "same"
        return "cast" if (t.is_integer(typ) or t.is_boolean(typ) or t.is_floating(typ)) else None
    return None


def check_schema(schema: pa.Schema, *, where: str) -> tuple[ColumnPlan, ...]:
    """Check one file's (or table's) Arrow schema against the contract; ``where`` names it in errors."""
    plans = []
    names = set(schema.names)
    for col, (_, expected) in RAW_COLUMNS.items():
        if col not in names:
            raise DataError(f"{where}: column '{col}' is missing (expected {expected})")
        typ = schema.field(col).type
        kind = _kind(col, typ)
        if kind is None:
            raise DataError(f"{where}: column '{col}' has type {typ} (expected {expected})")
        plans.append(ColumnPlan(col, kind))
    return tuple(plans)


@dataclass(frozen=True)
class FileCheck:
    """One raw file after its check: how to read each column, and its row count (from the footer)."""

    path: Path
    plan: tuple[ColumnPlan, ...]
    rows: int


def check_parquet_files(files: Iterable[Path], *, connection: object | None = None) -> list[FileCheck]:
    """Check the footers of raw-event Parquet files; parse string timestamps.

    ``connection`` is an optional DuckDB connection used to parse string timestamps (one is opened if needed).
    """
    import pyarrow.parquet as pq

    checked = []
    for path in files:
        try:
            meta = pq.read_metadata(path)
            schema = meta.schema.to_arrow_schema()
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
            raise DataError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        plan = check_schema(schema, where=str(path))
        if meta.num_rows and any(p.kind == "parse" for p in plan):
            _check_timestamps_parse(path, connection)
        checked.append(FileCheck(path, plan, meta.num_rows))
    return checked


def _check_timestamps_parse(path: Path, connection: object | None) -> None:
    import duckdb

    con = connection if connection is not None else duckdb.connect()
    try:
        if connection is None:
            con.execute("SET TimeZone = 'UTC'")  # type: ignore[attr-defined]
            con.execute("SET enable_progress_bar = false")  # type: ignore[attr-defined]
        row = con.execute(  # type: ignore[attr-defined]
            "SELECT count(*), min(event_timestamp) FROM read_parquet(?) "
            "WHERE event_timestamp IS NOT NULL AND TRY_CAST(event_timestamp AS TIMESTAMPTZ) IS NULL",
            [str(path)],
        ).fetchone()
    finally:
        if connection is None:
            con.close()  # type: ignore[attr-defined]
    if row and row[0]:
        raise DataError(
            f"{path}: column 'event_timestamp' has {row[0]} value(s) that do not parse as timestamps "
            f"(e.g. {row[1]!r})"
        )


def select_sql(plan: tuple[ColumnPlan, ...], source: str) -> str:
    """A DuckDB SELECT reading ``source`` (a ``read_parquet(...)`` call) into the canonical raw schema + ``ds``."""
    exprs = []
    for p in plan:
        typ = RAW_COLUMNS[p.name][0]
        if p.kind == "same":
            exprs.append(p.name)
        elif p.kind == "null":
            exprs.append(f"CAST(NULL AS {typ}) AS {p.name}")
        elif p.name == "is_clicked" and p.kind == "cast":
            exprs.append(f"CAST({p.name} AS INTEGER) AS {p.name}")
        else:  # cast and parse: DuckDB casts strings to TIMESTAMPTZ as UTC when they carry no offset
            exprs.append(f"CAST({p.name} AS {typ}) AS {p.name}")
    return f"SELECT {', '.join(exprs)}, ds FROM {source}"
