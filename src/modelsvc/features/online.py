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

import functools
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


def _frame(blob: bytes) -> bytes:
    """``blob`` as a RESP bulk string (``$<len>\\r\\n<bytes>\\r\\n``): how a Redis command carries it."""
    return b"$%d\r\n%b\r\n" % (len(blob), blob)


def _framer(frame: bool) -> Callable[[bytes], bytes]:
    """What each encoded value goes through: RESP framing when ``frame``, else nothing."""
    return _frame if frame else bytes


def _rows(matrix: np.ndarray, frame: bool) -> list[bytes]:
    """Each row of a 2-d uint8 array as bytes (one buffer, then slices), RESP-framed when ``frame``."""
    if frame:
        n, width = matrix.shape
        head = np.frombuffer(b"$%d\r\n" % width, dtype=np.uint8)
        framed = np.empty((n, len(head) + width + 2), dtype=np.uint8)
        framed[:, :len(head)] = head
        framed[:, len(head):-2] = matrix
        framed[:, -2:] = np.frombuffer(b"\r\n", dtype=np.uint8)
        matrix = framed
    buf = matrix.tobytes()
    width = matrix.shape[1]
    return [buf[i:i + width] for i in range(0, len(buf), width)]


def _fixed_width(values: np.ndarray, tag: int, dtype: str, frame: bool = False) -> list[bytes]:
    """``tag`` + the little-endian value, for every element."""
    packed = np.empty(len(values), dtype=[("t", "u1"), ("v", dtype)])
    packed["t"] = tag
    packed["v"] = values
    return _rows(packed.view(np.uint8).reshape(len(values), packed.dtype.itemsize), frame)


# the serialized Value of each element, and its value_text (SQLite's column; None when not asked for)
Encoded = tuple[list[bytes], list[str | None] | None]


def _encode_ints(column: pa.ChunkedArray | pa.Array, tag: bytes, texts: bool, frame: bool) -> Encoded:
    """Each distinct value is encoded once (numpy's unique), then spread by index."""
    values = np.asarray(column.fill_null(0).to_numpy(zero_copy_only=False), dtype=np.int64)
    valid = ~np.asarray(column.is_null().to_numpy(zero_copy_only=False), dtype=bool) if column.null_count else None
    ints = values[valid] if valid is not None else values
    distinct, index = np.unique(ints, return_inverse=True)
    blobs = np.concatenate([_varints(tag, distinct, frame), _objects([_framer(frame)(b"")])])
    if valid is not None:
        full = np.full(len(values), len(distinct), dtype=np.intp)
        full[valid] = index
        index = full
    return blobs[index].tolist(), (_objects([str(v) for v in distinct.tolist()] + [None])[index].tolist()
                                   if texts else None)


def _varints(tag: bytes, values: np.ndarray, frame: bool) -> np.ndarray:
    """``tag`` + the protobuf varint of each int64 (negatives: ten bytes, as two's complement), as an object
    array: the values of each encoded length form one fixed-width numpy block (a materialization can hold a
    million distinct values, a timestamp column for one)."""
    u = np.asarray(values, dtype=np.int64).view(np.uint64)
    length = np.ones(len(u), dtype=np.int64)
    for k in range(1, 10):
        length += u >= np.uint64(1 << (7 * k))
    out = np.empty(len(u), dtype=object)
    for size in np.unique(length).tolist():
        at = np.flatnonzero(length == size)
        v = u[at]
        block = np.empty((len(at), 1 + size), dtype=np.uint8)
        block[:, 0] = tag[0]
        for k in range(size):
            block[:, 1 + k] = ((v >> np.uint64(7 * k)) & np.uint64(0x7F)) | np.uint64(0x80 if k < size - 1 else 0)
        out[at] = _objects(_rows(block, frame))
    return out


def _encode_floats(column: pa.ChunkedArray | pa.Array, np_type: str, tag: int, texts: bool, frame: bool) -> Encoded:
    arr = np.asarray(column.to_numpy(zero_copy_only=False), dtype=np_type)  # nulls become NaN
    nan = np.isnan(arr)
    blobs = _fixed_width(arr, tag, np_type, frame)
    if nan.any():
        empty = _framer(frame)(b"")
        blobs = [empty if n else b for n, b in zip(nan.tolist(), blobs, strict=True)]
    if not texts:
        return blobs, None
    return blobs, [None if n else str(f) for n, f in zip(nan.tolist(), arr.astype(np.float64).tolist(), strict=True)]


def _encode_strings(column: pa.ChunkedArray | pa.Array, texts: bool, frame: bool) -> Encoded:
    """Each distinct string is encoded once (Arrow's dictionary encoding), then spread by index."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    encoded = arr.dictionary_encode()
    wrap = _framer(frame)
    distinct = [v.encode("utf8") for v in encoded.dictionary.to_pylist()]
    blobs = _objects([wrap(b"\x12" + _varint(len(raw)) + raw) for raw in distinct] + [wrap(b"")])
    index = np.asarray(encoded.indices.fill_null(len(distinct)).to_numpy(zero_copy_only=False), dtype=np.intp)
    return blobs[index].tolist(), (arr.to_pylist() if texts else None)


def _encode(column: pa.ChunkedArray | pa.Array, dtype: str, *, texts: bool = True, frame: bool = False) -> Encoded:
    """The serialized ``Value`` of each element, RESP-framed when ``frame``, and its ``value_text`` when
    ``texts``, as Feast writes them (null and NaN: an empty ``Value`` and no text)."""
    if dtype in ("Int64", "Int32"):
        return _encode_ints(column, b"\x20" if dtype == "Int64" else b"\x18", texts, frame)
    if dtype in ("Float64", "Float32"):
        return _encode_floats(column, *(("<f8", 0x29) if dtype == "Float64" else ("<f4", 0x35)), texts, frame)
    if dtype == "String":
        return _encode_strings(column, texts, frame)
    if dtype == "Bool":
        wrap = _framer(frame)
        values = column.to_pylist()
        blob = {None: wrap(b""), True: wrap(b"\x38\x01"), False: wrap(b"\x38\x00")}
        return ([blob[None if v is None else bool(v)] for v in values],
                [None if v is None else str(bool(v)) for v in values] if texts else None)
    raise ValueError(f"feature type {dtype} has no bulk encoding")


def _entity_keys(table: pa.Table, keys: list[tuple[str, int]], *, suffix: bytes = b"",
                 frame: bool = False) -> list[bytes]:
    """Feast's ``serialize_entity_key`` (version 3) of every row: the key count, the sorted key names, then each
    key's value type, length and value; followed by ``suffix`` (Redis: the project) and RESP-framed when
    ``frame``."""
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
                start = len(head) + len(prefix)
                rows = np.empty((len(arr), start + size + len(suffix)), dtype=np.uint8)
                rows[:, :start] = np.frombuffer(head + prefix, dtype=np.uint8)
                rows[:, start:start + size] = arr.view(np.uint8).reshape(len(arr), size)
                rows[:, start + size:] = np.frombuffer(suffix, dtype=np.uint8)
                return _rows(rows, frame)
            buf = arr.tobytes()
            parts.append([prefix + buf[i:i + size] for i in range(0, len(buf), size)])
    wrap = _framer(frame)
    return [wrap(head + b"".join(p) + suffix) for p in zip(*parts, strict=True)]


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
        assert texts is not None
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
    """(serialized protobuf ``Timestamp``, RESP-framed, and nanoseconds) of each event time, as Feast's Redis store
    computes them (once per distinct timestamp)."""
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
        out.append((_frame(ts.SerializeToString()), ts.seconds * 1_000_000_000 + ts.nanos))
    positions = pc.index_in(column, value_set=distinct).to_pylist()
    return [None if i is None else out[i] for i in positions]


_KEY, _STAMP = object(), object()


class _Replies:
    """The replies of pipelined commands, read from the connection's socket: redis-py's parser costs 2-5 us a
    reply, as much as the server's work for an ``HSET``. Only what ``HGET``, ``HSET`` and ``EXPIRE`` answer:
    bulk strings, nulls (RESP2 and RESP3), integers and errors; an error is raised as redis-py raises it.

    It reads ``conn._sock``, redis-py's socket of a connected ``Connection`` (the attribute of every redis-py
    release since 3.0): nothing may be pending in redis-py's own reader then, which holds for a connection just
    taken from the pool."""

    def __init__(self, conn: Any) -> None:
        self._sock = conn._sock
        self._buf = b""
        self._sent = 0  # integer replies owed by the commands sent (see sent)
        self._lines = 0  # integer replies received
        self._line_start = True

    def sent(self, count: int) -> None:
        """``count`` more commands that answer an integer (``HSET``, ``EXPIRE``) were sent."""
        self._sent += count

    def _recv(self) -> bytes:
        from redis.exceptions import ConnectionError

        try:
            data = self._sock.recv(1 << 20)
        except OSError as exc:
            raise ConnectionError(f"Error while reading from the socket: {exc}") from exc
        if not data:
            raise ConnectionError("Connection closed by server.")
        return data

    def values(self, count: int) -> list[bytes | None]:
        """The next ``count`` replies, each a bulk string (its bytes) or a null (None)."""
        out: list[bytes | None] = []
        buf, pos = self._buf, 0
        runs = True  # nulls only so far: take what has come at once (keys with nothing stored)
        while len(out) < count:
            for null in (b"_\r\n", b"$-1\r\n") if runs else ():
                run = min(count - len(out), (len(buf) - pos) // len(null))
                if run > 1 and buf.startswith(null, pos):
                    if buf[pos:pos + run * len(null)] != null * run:
                        runs = False  # mixed: one by one from here (a failed try costs once, not per reply)
                        break
                    out += [None] * run
                    pos += run * len(null)
            if len(out) == count:
                break
            end = buf.find(b"\r\n", pos)
            if end >= 0:
                kind = buf[pos]
                if kind == 0x5F or buf[pos:end] == b"$-1":  # "_": RESP3's null; "$-1": RESP2's
                    out.append(None)
                    pos = end + 2
                    continue
                if kind == 0x24:  # "$<size>", then the bytes
                    stop = end + 2 + int(buf[pos + 1:end])
                    if stop + 2 <= len(buf):
                        out.append(buf[end + 2:stop])
                        pos = stop + 2
                        continue
                else:
                    self._raise(buf[pos:end])
            buf, pos = buf[pos:] + self._recv(), 0
        self._buf = buf[pos:]
        return out

    def wait(self, in_flight: int = 0) -> None:
        """Until the integer replies of all but the last ``in_flight`` commands sent have come (each reply is one
        line: counting newlines counts them)."""
        if self._buf:
            raise AssertionError("unread replies before the writes")
        while self._lines < self._sent - in_flight:
            data = self._recv()
            if (self._line_start and data[:1] == b"-") or b"\n-" in data:
                line = data[0 if self._line_start and data[:1] == b"-" else data.index(b"\n-") + 1:]
                while b"\r\n" not in line:  # the whole error line, across pieces
                    line += self._recv()
                self._raise(line[:line.index(b"\r\n")])
            self._lines += data.count(b"\n")
            self._line_start = data.endswith(b"\n")

    @staticmethod
    def _raise(line: bytes) -> None:
        from redis.exceptions import InvalidResponse, ResponseError

        if line[:1] == b"-":
            raise ResponseError(line[1:].decode("utf-8", "replace"))
        raise InvalidResponse(f"unexpected reply from Redis: {line[:40]!r}")


def _stored_stamps(conn: Any, replies: _Replies, framed_keys: np.ndarray,
                   bounds: list[tuple[int, int]], ts_field: bytes) -> list[bytes | None]:
    """The stored timestamp of every key (``HGET key _ts:<view>``, Feast's read), pipelined a chunk at a time."""
    command = np.empty((len(framed_keys), 3), dtype=object)
    command[:, 0] = b"*3\r\n" + _frame(b"HGET")
    command[:, 1] = framed_keys
    command[:, 2] = _frame(ts_field)
    previous: list[bytes | None] = []
    for n, (lo, hi) in enumerate(bounds):  # the next chunk is sent before this one's replies are read
        for send_lo, send_hi in bounds[:2] if n == 0 else bounds[n + 1:n + 2]:
            conn.send_packed_command([b"".join(command[send_lo:send_hi].ravel().tolist())], check_health=False)
        previous += replies.values(hi - lo)
    return previous


def _newer(rows: range, stamps: list[tuple[bytes, int]], keys: list[bytes], previous: list[bytes | None],
           latest: dict[bytes, int]) -> list[int]:
    """Feast's staleness rule: the rows whose event time is newer than the stored one and than any earlier row of
    the same key (``latest``, updated)."""
    out = []
    for i in rows:
        nanos, key = stamps[i][1], keys[i]
        seen = max(_nanos(previous[i]), latest.get(key, 0))
        if seen and nanos <= seen:
            continue  # the stored row is as new or newer
        latest[key] = nanos
        out.append(i)
    return out


def write_redis(store: Any, view: Any, table: pa.Table, *, chunk: int = 10_000) -> int:
    """Write the latest rows ``table`` for ``view`` into the Redis online store as Feast does; returns the entity
    rows sent (Feast counts the rows it skips as stale too). Feast's commands: the stored timestamps are read
    (``HGET``, pipelined a chunk of keys at a time), then the newer rows' ``HSET`` (and ``EXPIRE``) are pipelined,
    one chunk in flight while the next is built. The commands are packed here, column-wise (redis-py's
    per-argument packing was most of the time), sent on a connection of Feast's own client, and their replies
    read by :class:`_Replies`."""
    from feast.infra.online_stores.helpers import _mmh3

    if table.num_rows == 0:
        return 0
    config = store.config
    online = config.online_store
    keys = [(c.name, _KEY_TYPES[c.dtype.to_value_type().name]) for c in view.entity_columns]
    project = config.project.encode("utf-8")
    redis_keys = _entity_keys(table, keys, suffix=project, frame=True)  # framed: they go into commands as they are
    framed_keys = _objects(redis_keys)
    stamps = _timestamps(table[view.batch_source.timestamp_field])
    if None in stamps:
        raise ValueError(f"feature view {view.name}: a row has no event timestamp")
    framed_stamps = _objects([s[0] for s in stamps])  # type: ignore[index]
    ts_field = f"_ts:{view.name}".encode()
    features = [(_mmh3(f"{view.name}:{f.name}"), _objects(_encode(table[f.name], str(f.dtype), texts=False,
                                                                  frame=True)[0])) for f in view.features]
    ttl = online.key_ttl_seconds or 0
    # per row: HSET key _ts:<view> <timestamp> (<field> <value>)*, then EXPIRE key ttl when there is a ttl;
    # _KEY, _STAMP and feature numbers stand for the row's own parts
    head: list[Any] = [b"*%d\r\n" % (2 + 2 * (1 + len(features))), _frame(b"HSET"), _KEY, _frame(ts_field),
                       _STAMP]
    for j, (field, _) in enumerate(features):
        head += [_frame(field), j]
    if ttl:
        head += [b"*3\r\n", _frame(b"EXPIRE"), _KEY, _frame(str(ttl).encode())]
    # Feast's own client for the configured connection string (not closed: Feast's store keeps it)
    client = store._get_provider().online_store._get_client(online)
    unique = len(set(redis_keys)) == len(redis_keys)
    latest: dict[bytes, int] = {}
    bounds = [(lo, min(lo + chunk, table.num_rows)) for lo in range(0, table.num_rows, chunk)]
    conn = client.connection_pool.get_connection()
    try:
        replies = _Replies(conn)
        previous: list[bytes | None] = [None] * table.num_rows
        if not online.skip_dedup:
            previous = _stored_stamps(conn, replies, framed_keys, bounds, ts_field)
        for lo, hi in bounds:
            rows: range | list[int]
            if online.skip_dedup or (unique and previous[lo:hi].count(None) == hi - lo):
                rows = range(lo, hi)  # nothing stored (or no staleness check): every row is written
            else:
                rows = _newer(range(lo, hi), stamps, redis_keys, previous, latest)  # type: ignore[arg-type]
            if not rows:
                continue
            index = np.asarray(rows, dtype=np.intp)
            commands = np.empty((len(index), len(head)), dtype=object)
            for j, part in enumerate(head):
                commands[:, j] = (framed_keys[index] if part is _KEY else framed_stamps[index] if part is _STAMP
                                  else features[part][1][index] if isinstance(part, int) else part)
            conn.send_packed_command([b"".join(commands.ravel().tolist())], check_health=False)
            replies.sent((2 if ttl else 1) * len(index))
            replies.wait(in_flight=(2 if ttl else 1) * len(index))  # the earlier chunks': this one stays in flight
        replies.wait()
    except BaseException:
        conn.disconnect()  # a reply may be left unread: the connection is not reused as is
        raise
    finally:
        client.connection_pool.release(conn)
    return table.num_rows


@functools.lru_cache(maxsize=65_536)
def _nanos(stored: bytes | None) -> int:
    """A stored ``_ts:<view>`` (a protobuf ``Timestamp``) in nanoseconds; the rows of one materialization window
    share few distinct ones, so each is parsed once."""
    if not stored:
        return 0
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.ParseFromString(stored)
    return ts.seconds * 1_000_000_000 + ts.nanos
