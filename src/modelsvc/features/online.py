"""Bulk materialization into Feast's SQLite and Redis online stores, in Feast's own storage layout.

Feast's materialization converts every pulled row to protobuf objects (entity key, one ``Value`` per feature) and
runs one ``INSERT … ON CONFLICT`` per feature per entity. :func:`write_sqlite` writes the same rows from the
Arrow table directly: the entity keys (Feast's serialization version 3) and the ``Value`` messages are encoded
column by column, and all rows go in one ``executemany`` in one transaction. The table, the columns
(``entity_key``, ``feature_name``, ``value``, ``value_text``, ``event_ts``, ``created_ts``), the upsert and every
value are Feast's: ``get_online_features`` reads exactly what Feast's own materialization writes (tested value by
value and byte by byte against it).

For Redis, :func:`write_redis` does what Feast's ``RedisOnlineStore.online_write_batch`` does (read the stored
event timestamps, skip entities whose stored row is as new or newer, ``HSET`` the timestamp and the
murmur3-keyed feature values, ``EXPIRE`` when ``key_ttl_seconds`` is set), with the same keys and bytes, but
from the Arrow table: no protobuf object per value, and pipelines of a bounded size.

:func:`bulk_supported` says when this path applies: the SQLite or Redis online store with entity key
serialization 3, no versioned (or, for SQLite, vector or value_num) tables, a source without field mapping, join
keys of type Int64, Int32 or String and features of type Int64, Int32, Float64, Float32, String or Bool.
Anything else goes through Feast.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

_U32 = struct.Struct("<I")
# ValueType numbers in Feast's entity key encoding
_STRING, _INT32, _INT64 = 2, 3, 4
_KEY_TYPES = {"INT64": _INT64, "INT32": _INT32, "STRING": _STRING}
_FEATURE_TYPES = {"Int64", "Int32", "Float64", "Float32", "String", "Bool"}


def bulk_supported(store: Any, view: Any) -> bool:
    """True when :func:`write_sqlite` writes ``view`` exactly as Feast would."""
    config = store.config
    online = config.online_store
    if online.type not in ("sqlite", "redis") or config.entity_key_serialization_version != 3:
        return False
    if online.type == "redis" and str(getattr(online.redis_type, "value", online.redis_type)) != "redis":
        return False  # one node: no cluster or sentinel
    if getattr(online, "vector_enabled", False) or getattr(online, "enable_openai_compatible_store", False):
        return False
    if getattr(config.registry, "enable_online_feature_view_versioning", False):
        return False
    source = view.batch_source
    if source is None or source.field_mapping:
        return False
    if any(str(c.dtype.to_value_type().name) not in _KEY_TYPES for c in view.entity_columns):
        return False
    return all(str(f.dtype) in _FEATURE_TYPES for f in view.features)


def db_path(config: Any) -> Path:
    """The SQLite file, resolved as Feast resolves it."""
    path = Path(config.online_store.path)
    return path if path.is_absolute() or not config.repo_path else Path(config.repo_path) / path


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64  # protobuf: negative int32/int64 take ten bytes
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _fixed_width(values: np.ndarray, tag: int, dtype: str) -> list[bytes]:
    """``tag`` + the little-endian value, for every element (one numpy buffer, then slices)."""
    packed = np.empty(len(values), dtype=[("t", "u1"), ("v", dtype)])
    packed["t"] = tag
    packed["v"] = values
    buf = packed.tobytes()
    width = packed.dtype.itemsize
    return [buf[i:i + width] for i in range(0, len(buf), width)]


Encoded = tuple[list[bytes], list[str | None]]


def _encode_ints(column: pa.ChunkedArray | pa.Array, tag: bytes) -> Encoded:
    """Each distinct value is encoded once (numpy's unique), then spread by index."""
    values = np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool) if column.null_count else None
    ints = values[valid] if valid is not None else values
    distinct, index = np.unique(ints, return_inverse=True)
    plain = distinct.tolist()
    blobs = np.array([tag + _varint(v) for v in plain] + [b""], dtype=object)
    texts = np.array([str(v) for v in plain] + [None], dtype=object)
    if valid is not None:
        full = np.full(len(values), len(plain), dtype=np.intp)
        full[valid] = index
        index = full
    return blobs[index].tolist(), texts[index].tolist()


def _encode_floats(column: pa.ChunkedArray | pa.Array, np_type: str, tag: int) -> Encoded:
    arr = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np_type)  # nulls become NaN
    null = np.isnan(arr).tolist()
    blobs = _fixed_width(arr, tag, np_type)
    as_float = arr.astype(np.float64).tolist()
    return ([b"" if n else b for n, b in zip(null, blobs, strict=True)],
            [None if n else str(f) for n, f in zip(null, as_float, strict=True)])


def _encode_strings(values: list[Any]) -> Encoded:
    cache: dict[str, bytes] = {}
    blobs: list[bytes] = []
    for v in values:
        if v is None:
            blobs.append(b"")
            continue
        blob = cache.get(v)
        if blob is None:
            raw = v.encode("utf8")
            blob = cache[v] = b"\x12" + _varint(len(raw)) + raw
        blobs.append(blob)
    return blobs, list(values)


def _encode(column: pa.ChunkedArray | pa.Array, dtype: str) -> Encoded:
    """The serialized ``Value`` and ``value_text`` of each element, as Feast writes them (null and NaN: an
    empty ``Value`` and no text)."""
    if dtype in ("Int64", "Int32"):
        return _encode_ints(column, b"\x20" if dtype == "Int64" else b"\x18")
    if dtype in ("Float64", "Float32"):
        return _encode_floats(column, *(("<f8", 0x29) if dtype == "Float64" else ("<f4", 0x35)))
    if dtype == "String":
        return _encode_strings(column.to_pylist())
    if dtype == "Bool":
        values = column.to_pylist()
        return ([b"" if v is None else (b"\x38\x01" if v else b"\x38\x00") for v in values],
                [None if v is None else str(bool(v)) for v in values])
    raise ValueError(f"feature type {dtype} has no bulk encoding")


def _entity_keys(table: pa.Table, keys: list[tuple[str, int]]) -> list[bytes]:
    """Feast's ``serialize_entity_key`` (version 3) of every row: the key count, the sorted key names, then each
    key's value type, length and value."""
    keys = sorted(keys)
    head = _U32.pack(len(keys)) + b"".join(
        _U32.pack(_STRING) + _U32.pack(len(n.encode("utf8"))) + n.encode("utf8") for n, _ in keys)
    parts: list[list[bytes]] = []
    for name, value_type in keys:
        column = table[name]
        if column.null_count:
            raise ValueError(f"join key {name} has nulls")
        if value_type == _STRING:
            parts.append([_U32.pack(_STRING) + _U32.pack(len(raw)) + raw
                          for raw in (v.encode("utf8") for v in column.to_pylist())])
        else:
            np_type, size = ("<i8", 8) if value_type == _INT64 else ("<i4", 4)
            arr = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np_type)
            prefix = _U32.pack(value_type) + _U32.pack(size)
            if len(keys) == 1:  # the whole key in one numpy buffer, then one slice per row
                width = len(head) + len(prefix) + size
                rows = np.empty((len(arr), width), dtype=np.uint8)
                rows[:, :-size] = np.frombuffer(head + prefix, dtype=np.uint8)
                rows[:, -size:] = arr.view(np.uint8).reshape(len(arr), size)
                buf = rows.tobytes()
                return [buf[i:i + width] for i in range(0, len(buf), width)]
            buf = arr.tobytes()
            parts.append([prefix + buf[i:i + size] for i in range(0, len(buf), size)])
    return [head + b"".join(p) for p in zip(*parts, strict=True)] if len(parts) > 1 else \
        [head + p for p in parts[0]]


def _key_order(table: pa.Table, keys: list[tuple[str, int]], entity: list[bytes]) -> np.ndarray:
    """The row order of the serialized entity keys (SQLite's BLOB order: bytewise). With one integer key the
    keys differ only in the little-endian value, whose bytewise order is that of the byte-swapped unsigned
    number: one numpy sort."""
    if len(keys) == 1 and keys[0][1] in (_INT64, _INT32):
        np_type = "<i8" if keys[0][1] == _INT64 else "<i4"
        arr = np.asarray(table[keys[0][0]].to_numpy(zero_copy_only=False), dtype=np_type)
        return np.argsort(arr.view(">u8" if np_type == "<i8" else ">u4"), kind="stable")
    return np.array(sorted(range(len(entity)), key=entity.__getitem__), dtype=np.intp)


def _epoch_seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """What Feast stores for a timestamp: its SQLite adapter's value of the naive UTC datetime (computed once per
    distinct timestamp: a materialization has few), as an object array."""
    from feast.infra.online_stores.sqlite import adapt_datetime_epoch

    typ = column.type
    if pa.types.is_timestamp(typ) and typ.tz is not None:
        column = column.cast(pa.timestamp(typ.unit, tz="UTC")).cast(pa.timestamp(typ.unit))
    column = column.cast(pa.timestamp("us"))
    null = np.iinfo(np.int64).min
    micros = np.asarray(column.cast(pa.int64()).fill_null(null).to_numpy(zero_copy_only=False), dtype=np.int64)
    distinct, index = np.unique(micros, return_inverse=True)
    stamps = pa.array(distinct, pa.int64(), mask=distinct == null).cast(pa.timestamp("us")).to_pylist()
    return _objects([None if v is None else adapt_datetime_epoch(v) for v in stamps])[index]


def write_sqlite(store: Any, view: Any, table: pa.Table, *, progress: Callable[[int], Any] | None = None) -> int:
    """Upsert the latest rows ``table`` (Feast's ``pull_latest_from_table_or_query`` result for ``view``) into
    the SQLite online store; returns the entity rows written. Check :func:`bulk_supported` first.

    The rows are built column-wise (numpy object arrays, in primary-key order: SQLite appends to its B-trees
    instead of seeking) and inserted by one ``executemany`` in one transaction, through apsw when it is installed
    (its ``executemany`` binds about 1.7x faster than the standard ``sqlite3`` module's) and ``sqlite3``
    otherwise; the file is the same either way."""
    from feast.infra.online_stores.helpers import compute_table_id

    n = table.num_rows
    if n == 0:
        return 0
    source = view.batch_source
    keys = [(c.name, _KEY_TYPES[c.dtype.to_value_type().name]) for c in view.entity_columns]
    entity = _entity_keys(table, keys)
    order = _key_order(table, keys, entity)
    event = _epoch_seconds(table[source.timestamp_field])[order]
    created = (_epoch_seconds(table[source.created_timestamp_column])[order] if source.created_timestamp_column
               else np.full(n, None, dtype=object))
    features = sorted((f.name, *_encode(table[f.name], str(f.dtype))) for f in view.features)
    width = len(features)
    # one row per (entity, feature), features in name order within an entity: the primary-key order
    key_col = np.repeat(_objects(entity)[order], width)
    name_col = np.tile(np.array([name for name, _, _ in features], dtype=object), n)
    value_col = np.empty(n * width, dtype=object)
    text_col = np.empty(n * width, dtype=object)
    for j, (_, blobs, texts) in enumerate(features):
        value_col[j::width] = _objects(blobs)[order]
        text_col[j::width] = _objects(texts)[order]
    rows = zip(key_col.tolist(), name_col.tolist(), value_col.tolist(), text_col.tolist(),
               np.repeat(event, width).tolist(), np.repeat(created, width).tolist(), strict=True)

    name = compute_table_id(store.config.project, view, False).replace('"', '""')
    sql = (f'INSERT INTO "{name}" (entity_key, feature_name, value, value_text, event_ts, created_ts) '
           "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
           "value = excluded.value, value_text = excluded.value_text, event_ts = excluded.event_ts, "
           "created_ts = excluded.created_ts;")
    _executemany(db_path(store.config), sql, rows)
    if progress:
        progress(n)
    return n


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` (bytes stay bytes: ``np.array`` would make a fixed-width array)."""
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def _executemany(path: Path, sql: str, rows: Iterator[tuple[Any, ...]] | Any) -> None:
    """``sql`` for every row, in one transaction: apsw when installed, else the standard ``sqlite3``."""
    try:
        import apsw
    except ImportError:
        conn = sqlite3.connect(path)
        try:
            with conn:
                conn.executemany(sql, rows)
        finally:
            conn.close()
        return
    db = apsw.Connection(str(path))
    try:
        db.set_busy_timeout(5_000)  # the sqlite3 module's default wait on a locked file
        with db:
            db.executemany(sql, rows)
    finally:
        db.close()


def write(store: Any, view: Any, table: pa.Table) -> int:
    """:func:`write_sqlite` or :func:`write_redis`, by the online store."""
    return write_redis(store, view, table) if store.config.online_store.type == "redis" else \
        write_sqlite(store, view, table)


def _timestamps(column: pa.ChunkedArray | pa.Array) -> list[tuple[bytes, int] | None]:
    """(serialized protobuf ``Timestamp``, nanoseconds) of each event time, as Feast's Redis store computes them
    (once per distinct timestamp)."""
    import pyarrow.compute as pc
    from google.protobuf.timestamp_pb2 import Timestamp

    typ = column.type
    if not (pa.types.is_timestamp(typ) and typ.tz is not None):
        column = column.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    distinct = pc.unique(column)
    out: list[tuple[bytes, int] | None] = []
    for value in distinct.to_pylist():
        if value is None:
            out.append(None)
            continue
        ts = Timestamp()
        ts.FromDatetime(value)
        out.append((ts.SerializeToString(), ts.seconds * 1_000_000_000 + ts.nanos))
    positions = pc.index_in(column, value_set=distinct).to_pylist()
    return [None if i is None else out[i] for i in positions]


# one round trip per chunk instead of one command per entity: the stored timestamps of KEYS, as one string
# (each: a 4-byte big-endian length, then the bytes; length 0: none) ...
_READ_TS = """
local out = {}
for i, key in ipairs(KEYS) do
  local v = redis.call('HGET', key, ARGV[1])
  if v then out[i] = struct.pack('>I4', #v) .. v else out[i] = '\\0\\0\\0\\0' end
end
return table.concat(out)
"""
# ... and the hashes: ARGV = ttl (0: none), the n field names, then n values per key, in KEYS order
_WRITE_HASHES = """
local ttl = tonumber(ARGV[1])
local n = 0
local names = {}
local i = 2
while true do
  local v = ARGV[i]
  if v == '__modelsvc_end_of_names__' then break end
  n = n + 1
  names[n] = v
  i = i + 1
end
local base = i + 1
for k, key in ipairs(KEYS) do
  local args = {}
  for j = 1, n do
    args[2 * j - 1] = names[j]
    args[2 * j] = ARGV[base + (k - 1) * n + j - 1]
  end
  redis.call('HSET', key, unpack(args))
  if ttl > 0 then redis.call('EXPIRE', key, ttl) end
end
return #KEYS
"""
_END_OF_NAMES = b"__modelsvc_end_of_names__"


class _Resp:
    """RESP bulk strings (``$<len>\\r\\n<bytes>\\r\\n``), each distinct value framed once."""

    def __init__(self) -> None:
        self._cache: dict[bytes, bytes] = {}

    def one(self, value: bytes) -> bytes:
        framed = self._cache.get(value)
        if framed is None:
            framed = b"$%d\r\n%b\r\n" % (len(value), value)
            if len(self._cache) < 100_000:
                self._cache[value] = framed
        return framed

    def many(self, values: list[bytes]) -> np.ndarray:
        """``values`` framed, as an object array: few distinct values go through a dict, others one by one."""
        distinct = set(values)
        if len(distinct) * 2 < len(values):
            table = {v: self.one(v) for v in distinct}
            return _objects(list(map(table.__getitem__, values)))
        return _objects([b"$%d\r\n%b\r\n" % (len(v), v) for v in values])


def _evalsha(resp: _Resp, sha: bytes, keys: list[bytes], args: list[bytes]) -> bytes:
    """The packed ``EVALSHA`` command (keys and args already framed by ``resp``)."""
    head = [b"*%d\r\n" % (3 + len(keys) + len(args)), resp.one(b"EVALSHA"), resp.one(sha),
            resp.one(str(len(keys)).encode())]
    return b"".join(head + keys + args)


def _unpack_stamps(packed: bytes, count: int) -> list[bytes | None]:
    """The stored timestamps of the read script's reply (None: none)."""
    if packed == b"\0\0\0\0" * count:
        return [None] * count
    out: list[bytes | None] = []
    pos = 0
    for _ in range(count):
        (size,) = struct.unpack_from(">I", packed, pos)
        pos += 4
        out.append(packed[pos:pos + size] if size else None)
        pos += size
    if pos != len(packed):
        raise ValueError("unexpected reply of the timestamp read script")
    return out


def write_redis(store: Any, view: Any, table: pa.Table, *, chunk: int = 10_000) -> int:
    """Write the latest rows ``table`` for ``view`` into the Redis online store as Feast does; returns the entity
    rows sent (Feast counts the rows it skips as stale too). Each chunk is two Lua scripts: read the stored
    timestamps, then write the newer rows' hashes (``HSET``, ``EXPIRE``): what Feast's pipeline sends, without a
    command per entity. The ``EVALSHA`` commands are packed here (each distinct value framed once: redis-py's
    per-argument packing was most of the time) and sent on a connection of Feast's own client."""
    from feast.infra.online_stores.helpers import _mmh3

    if table.num_rows == 0:
        return 0
    config = store.config
    online = config.online_store
    keys = [(c.name, _KEY_TYPES[c.dtype.to_value_type().name]) for c in view.entity_columns]
    project = config.project.encode("utf-8")
    resp = _Resp()
    redis_keys = [k + project for k in _entity_keys(table, keys)]
    framed_keys = resp.many(redis_keys)
    stamps = _timestamps(table[view.batch_source.timestamp_field])
    if any(s is None for s in stamps):
        raise ValueError(f"feature view {view.name}: a row has no event timestamp")
    framed_stamps = resp.many([s[0] for s in stamps])  # type: ignore[index]
    ts_field = f"_ts:{view.name}".encode()
    features = [(_mmh3(f"{view.name}:{f.name}"), resp.many(_encode(table[f.name], str(f.dtype))[0]))
                for f in view.features]
    names = [resp.one(v) for v in (str(online.key_ttl_seconds or 0).encode(), ts_field,
                                   *(field for field, _ in features), _END_OF_NAMES)]
    # Feast's own client for the configured connection string (not closed: Feast's store keeps it)
    client = store._get_provider().online_store._get_client(online)
    read_sha, write_sha = (sha if isinstance(sha, bytes) else str(sha).encode()
                           for sha in (client.script_load(_READ_TS), client.script_load(_WRITE_HASHES)))
    unique = len(set(redis_keys)) == len(redis_keys)
    latest: dict[bytes, int] = {}
    conn = client.connection_pool.get_connection()
    try:
        for lo in range(0, table.num_rows, chunk):
            hi = min(lo + chunk, table.num_rows)
            previous: list[bytes | None] = [None] * (hi - lo)
            if not online.skip_dedup:
                conn.send_packed_command([_evalsha(resp, read_sha, framed_keys[lo:hi].tolist(), [resp.one(ts_field)])])
                previous = _unpack_stamps(conn.read_response(disable_decoding=True), hi - lo)
            rows: range | list[int]
            if unique and all(p is None for p in previous):
                rows = range(lo, hi)  # nothing stored: every row is written
            else:
                rows = []
                for i in range(lo, hi):
                    stamp, key = stamps[i], redis_keys[i]
                    assert stamp is not None
                    if not online.skip_dedup:
                        seen = max(_nanos(previous[i - lo]), latest.get(key, 0))
                        if seen and stamp[1] <= seen:
                            continue  # Feast: the stored row is as new or newer
                        latest[key] = stamp[1]
                    rows.append(i)
            if not rows:
                continue
            index = np.asarray(rows, dtype=np.intp)
            values = np.empty((len(index), 1 + len(features)), dtype=object)  # per key: timestamp, then features
            values[:, 0] = framed_stamps[index]
            for j, (_, blobs) in enumerate(features):
                values[:, j + 1] = blobs[index]
            conn.send_packed_command([_evalsha(resp, write_sha, framed_keys[index].tolist(),
                                               names + values.ravel().tolist())])
            conn.read_response(disable_decoding=True)
    except BaseException:
        conn.disconnect()  # a reply may be left unread: the connection is not reused as is
        raise
    finally:
        client.connection_pool.release(conn)
    return table.num_rows


def _nanos(stored: bytes | None) -> int:
    if not stored:
        return 0
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.ParseFromString(stored)
    return ts.seconds * 1_000_000_000 + ts.nanos
