"""The Hive offline store without a server: the text HiveServer2 sends for arrays, back to typed lists."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from modelsvc.errors import DataError
from modelsvc.features.hive.types import hive_list_arrow_type, hive_to_feast_value_type, restore_lists

UTC = timezone.utc


def test_server_text_becomes_lists_of_the_declared_type() -> None:
    # as Spark's Thrift server renders them (timestamps unquoted); Hive quotes timestamps
    text = pa.table({
        "ints": ["[1,1]", "[]", None],
        "doubles": ["[1.5,NaN,null]", "[-Infinity,1.0E300]", "[]"],
        "flags": ["[true,false]", "[]", "[null]"],
        "times": ["[2024-01-01 00:00:00.123456,2024-01-02 00:00:00]", '["2024-05-01 12:00:00"]', "[]"],
        "names": ['["a","b,c"]', "[null]", "[]"],
        "other": ["[1]", "x", None],
    })
    types = {"INTS": pa.list_(pa.int32()), "doubles": pa.list_(pa.float64()), "flags": pa.list_(pa.bool_()),
             "times": pa.list_(pa.timestamp("us", tz="UTC")), "names": pa.list_(pa.string()),
             "other": pa.string()}
    got = restore_lists(text, types)
    assert got.schema.field("ints").type == pa.list_(pa.int32())
    assert got.schema.field("other").type == pa.string()  # not a list: untouched
    assert got["ints"].to_pylist() == [[1, 1], [], None]
    d = got["doubles"].to_pylist()
    assert d[0][0] == 1.5 and math.isnan(d[0][1]) and d[0][2] is None and d[1] == [-math.inf, 1e300] and d[2] == []
    assert got["flags"].to_pylist() == [[True, False], [], [None]]
    assert got["times"].to_pylist() == [
        [datetime(2024, 1, 1, 0, 0, 0, 123456, tzinfo=UTC), datetime(2024, 1, 2, tzinfo=UTC)],
        [datetime(2024, 5, 1, 12, tzinfo=UTC)], []]
    assert got["names"].to_pylist() == [["a", "b,c"], [None], []]


def test_unreadable_array_text_names_the_column() -> None:
    # Spark does not escape a quote inside a string element: refused, not mis-split
    with pytest.raises(DataError, match="column names"):
        restore_lists(pa.table({"names": ['["x"y"]']}), {"names": pa.list_(pa.string())})


def test_hive_types() -> None:
    assert hive_list_arrow_type("array<int>") == pa.list_(pa.int32())
    assert hive_list_arrow_type("ARRAY<TIMESTAMP>") == pa.list_(pa.timestamp("us", tz="UTC"))
    assert hive_list_arrow_type("BIGINT") is None and hive_list_arrow_type("array<map<string,int>>") is None
    assert hive_to_feast_value_type("array<double>").name == "DOUBLE_LIST"
