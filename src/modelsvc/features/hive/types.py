"""Hive column types in Feast and Arrow terms, and the lists HiveServer2 sends as text.

HiveServer2 returns a complex column (``ARRAY<…>``) as its text rendering, not as a value: ``[1,2]``,
``[1.5,NaN,null]``, ``[true,false]``, ``[2024-01-01 00:00:00.5,…]`` (Spark's Thrift server leaves timestamps
unquoted, Hive quotes them), ``[]``. :func:`restore_lists` turns such columns back into Arrow lists of the
declared element type.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
from feast.value_type import ValueType

from modelsvc.errors import DataError

_HIVE_TO_FEAST = {
    "TINYINT": ValueType.INT32, "SMALLINT": ValueType.INT32, "INT": ValueType.INT32, "INTEGER": ValueType.INT32,
    "BIGINT": ValueType.INT64, "FLOAT": ValueType.FLOAT, "DOUBLE": ValueType.DOUBLE, "DECIMAL": ValueType.DOUBLE,
    "BOOLEAN": ValueType.BOOL, "STRING": ValueType.STRING, "VARCHAR": ValueType.STRING, "CHAR": ValueType.STRING,
    "BINARY": ValueType.BYTES, "TIMESTAMP": ValueType.UNIX_TIMESTAMP, "DATE": ValueType.UNIX_TIMESTAMP,
}

_HIVE_TO_ARROW = {
    "TINYINT": pa.int32(), "SMALLINT": pa.int32(), "INT": pa.int32(), "INTEGER": pa.int32(),
    "BIGINT": pa.int64(), "FLOAT": pa.float32(), "DOUBLE": pa.float64(), "DECIMAL": pa.float64(),
    "BOOLEAN": pa.bool_(), "STRING": pa.string(), "VARCHAR": pa.string(), "CHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
}


def hive_to_feast_value_type(hive_type: str) -> ValueType:
    """A Hive column type (``BIGINT``, ``decimal(10,2)``, ``array<string>`` …) → Feast ValueType."""
    base = hive_type.strip().upper().split("(")[0].split("<")[0]
    if base == "ARRAY":
        inner = hive_to_feast_value_type(hive_type.strip()[6:-1])
        return ValueType[f"{inner.name}_LIST"] if f"{inner.name}_LIST" in ValueType.__members__ else ValueType.UNKNOWN
    return _HIVE_TO_FEAST.get(base, ValueType.UNKNOWN)


def hive_list_arrow_type(hive_type: str) -> pa.DataType | None:
    """``ARRAY<T>`` of a primitive ``T`` → ``list<arrow T>``; None for anything else."""
    text = hive_type.strip().upper()
    if not (text.startswith("ARRAY<") and text.endswith(">")):
        return None
    element = _HIVE_TO_ARROW.get(text[6:-1].split("(")[0].strip())
    return pa.list_(element) if element is not None else None


def _parse_timestamp(text: str) -> datetime:
    value = datetime.fromisoformat(text.strip().strip('"'))
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _parse_list(text: str, element: pa.DataType, column: str) -> list[Any]:
    body = text.strip()
    if not (body.startswith("[") and body.endswith("]")):
        raise DataError(f"column {column}: {text[:40]!r} is not an array")
    if pa.types.is_timestamp(element):
        inner = body[1:-1].strip()
        if not inner:
            return []
        return [None if item.strip() == "null" else _parse_timestamp(item) for item in inner.split(",")]
    try:
        values = json.loads(body)  # numbers (also NaN, Infinity), booleans, null, quoted strings
    except ValueError:
        raise DataError(f"column {column}: the server's text {text[:40]!r} cannot be read back as a list of "
                        f"{element} (Spark's Thrift server does not escape quotes inside strings)") from None
    return list(values)


def restore_lists(table: pa.Table, types: Mapping[str, pa.DataType]) -> pa.Table:
    """Replace the string columns of ``table`` whose declared type (``types``, by lower-cased name) is a list by
    real lists of that type."""
    wanted = {name.lower(): typ for name, typ in types.items() if pa.types.is_list(typ)}
    if not wanted:
        return table
    columns = []
    for name, column in zip(table.column_names, table.columns, strict=True):
        typ = wanted.get(name.lower())
        if typ is not None and (pa.types.is_string(column.type) or pa.types.is_null(column.type)):
            values = [None if v is None else _parse_list(v, typ.value_type, name) for v in column.to_pylist()]
            column = pa.chunked_array([pa.array(values, type=typ)])
        columns.append(column)
    return pa.table(columns, names=table.column_names)
