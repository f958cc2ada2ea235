"""Raw-event files spoiled on purpose, for the contract tests."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq


def damage_data_pages(path: Path, column: str) -> None:
    """Overwrite bytes inside ``column``'s first data page; the footer stays intact (the file still opens)."""
    meta = pq.read_metadata(path)
    names = [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)]
    offset = meta.row_group(0).column(names.index(column)).data_page_offset
    data = bytearray(path.read_bytes())
    data[offset + 2:offset + 40] = b"\xab" * 38
    path.write_bytes(bytes(data))
    assert pq.read_metadata(path).num_rows == meta.num_rows
