"""The online reader of the prediction service: the model's features of a list of users, from the configured
Feast online store, as ``FeatureStore.get_online_features`` returns them, without its per-call cost.

``FeatureStore.get_online_features`` re-reads the registry and rebuilds its plan on every call (about a millisecond
and more before any I/O). :class:`OnlineFeatures` resolves the feature service once, then reads each feature view
with Feast's own ``OnlineStore.online_read`` (one SQLite query or one Redis pipeline per view) and converts the
values with Feast's own ``feast_value_type_to_python_type``: the values are those ``get_online_features`` returns
(tests/integration/test_serving.py checks it). Then, as the point-in-time join of training does, a value whose
feature row is older than its view's ttl at the instant of the prediction is treated as missing: the model's
bundled preprocessor imputes it. Used by ``modelsvc.serving`` (through ``serving.sources``).

On Redis every view of every user is read in one round trip (:class:`_RedisBatch`: one read-only Lua script, Feast's
own keys and fields, its value parsing inlined) instead of Feast's pipeline per view, with a reply parsed in Python
per user. On SQLite (:class:`_SqliteRead`) one query per view, as Feast, with the users' keys cached and only the
model's features parsed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from modelsvc.config import Settings
from modelsvc.errors import ServiceUnavailableError
from modelsvc.features import store as feast_features

# -- online features -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ViewRead:
    """One feature view of the model's feature service, as served."""

    name: str
    view: Any  # feast FeatureView
    features: list[str]
    ttl: timedelta | None


@dataclass
class OnlineRows:
    """Feature values of a list of users (in order) at one instant, stale values already removed."""

    user_ids: list[int]
    features: list[str]
    values: list[dict[str, Any]]  # per user: feature -> value (None: missing or stale)
    read_s: float = 0.0
    stale: int = 0  # values present in the store but older than the view's ttl


@dataclass
class OnlineFeatures:
    """Reads the model's features from the configured online store (SQLite or Redis)."""

    settings: Settings
    store: Any = None
    online_store: Any = None
    config: Any = None
    views: list[ViewRead] = field(default_factory=list)
    _keys: dict[int, Any] = field(default_factory=dict)
    _redis: _RedisBatch | None = None
    _sqlite: _SqliteRead | None = None

    @classmethod
    def open(cls, settings: Settings) -> OnlineFeatures:
        """Resolve the feature service once (Feast registry) and connect to the online store."""
        with feast_features._online_store(settings):
            store = feast_features.feature_store(settings, apply=False)
            service = feast_features._service(store, settings)
            views = []
            for projection in service.feature_view_projections:
                view = store.get_feature_view(projection.name)
                names = [f.name for f in projection.features]
                views.append(ViewRead(projection.name_to_use(), view.with_projection(projection)
                                      if hasattr(view, "with_projection") else view, names, view.ttl or None))
            self = cls(settings, store, store._get_provider().online_store, store.config, views)
        self._tune_redis()
        if settings.features.online_store == "redis" and hasattr(self.online_store, "_client"):
            self._redis = _RedisBatch.plan(self)
        elif settings.features.online_store == "sqlite" and hasattr(self.online_store, "_get_conn"):
            self._sqlite = _SqliteRead.plan(self)
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f for v in self.views for f in v.features]

    def _tune_redis(self) -> None:
        """Give Feast's Redis store a client that fails fast (``serving.online_timeout_s``, no retries with
        backoff): an online store that does not answer is a 503 now, not a request hung for seconds."""
        if self.settings.features.online_store != "redis" or not hasattr(self.online_store, "_client"):
            return
        import redis as redis_py
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        cfg, timeout = self.settings.features.redis, self.settings.serving.online_timeout_s
        self.online_store._client = redis_py.Redis(
            host=cfg.host, port=cfg.port, db=cfg.db, ssl=cfg.ssl,
            password=cfg.password.get_secret_value() if cfg.password else None,
            socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0))

    def read_raw(self, user_ids: Sequence[int]) -> list[list[tuple[datetime | None, dict[str, Any] | None]]]:
        """Per view, per unique user: (feature row timestamp, feature values as Python values) as Feast holds
        them, before any ttl check. Users are in the order of ``unique(user_ids)``."""
        if self._redis is not None:
            with self._errors():
                return self._redis.read(self, [int(u) for u in user_ids])
        if self._sqlite is not None:
            with self._errors():
                return self._sqlite.read(self, [int(u) for u in user_ids])
        keys = [self._key(int(u)) for u in user_ids]
        out = []
        with self._errors():
            for v in self.views:
                rows = self.online_store.online_read(config=self.config, table=v.view, entity_keys=keys,
                                                     requested_features=list(v.features))
                converted: list[tuple[datetime | None, dict[str, Any] | None]] = []
                for ts, values in rows:
                    if values is None:
                        converted.append((None, None))
                        continue
                    converted.append((ts, {f: _python_value(values[f]) if f in values else None
                                           for f in v.features}))
                out.append(converted)
        return out

    def _key(self, user_id: int) -> Any:
        """The entity key proto of a user (cached: building protos is a good part of a small request)."""
        key = self._keys.get(user_id)
        if key is None:
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            key = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])
            if len(self._keys) >= KEY_CACHE_SIZE:
                self._keys.clear()
            self._keys[user_id] = key
        return key

    def read(self, user_ids: Sequence[int], *, at: datetime | None = None) -> OnlineRows:
        """The model's features of ``user_ids`` fresh at ``at`` (default: now). A value whose feature row is more
        than the view's ttl older than ``at`` is missing, as in the point-in-time join of training (where a row
        exactly ttl old is still joined)."""
        t0 = time.perf_counter()
        at = at or datetime.now(timezone.utc)
        unique = list(dict.fromkeys(int(u) for u in user_ids))
        raw = self.read_raw(unique)
        per_user: dict[int, dict[str, Any]] = {u: {} for u in unique}
        stale = 0
        for v, rows in zip(self.views, raw, strict=True):
            for u, (ts, values) in zip(unique, rows, strict=True):
                fresh = values is not None and (v.ttl is None or ts is None or ts + v.ttl >= at)
                if values is not None and not fresh:
                    stale += sum(x is not None for x in values.values())
                for f in v.features:
                    per_user[u][f] = values.get(f) if fresh and values is not None else None
        return OnlineRows([int(u) for u in user_ids], self.feature_names, [per_user[int(u)] for u in user_ids],
                          read_s=time.perf_counter() - t0, stale=stale)

    def ping(self) -> None:
        """Raise ServiceUnavailableError when the online store does not answer (one cheap read)."""
        if self.settings.features.online_store == "redis":
            with self._errors():
                self.online_store._get_client(self.config.online_store).ping()
            return
        path = self.settings.paths.resolve("feast") / "online_store.db"
        if not path.is_file():
            raise ServiceUnavailableError(f"SQLite online store {path} does not exist (run: modelsvc materialize)")
        self.read_raw([0])

    def _errors(self) -> Any:
        return _OnlineErrors(self.settings, feast_features._online_store(self.settings))

    def close(self) -> None:
        client = getattr(self.online_store, "_client", None)
        if client is not None and hasattr(client, "close"):
            client.close()


class _RedisBatch:
    """All views of a list of users in one Redis round trip, in Feast's Redis layout.

    Feast keeps one Redis hash per entity key and project, with a field per feature (``mmh3("<view>:<feature>")``)
    and one timestamp field per view (``_ts:<view>``); its ``online_read`` sends one pipeline per view, a command
    per entity, and parses every reply in Python. Here the keys and fields come from Feast's own helpers, one
    read-only Lua script HMGETs every user's fields of every view on the server and returns them msgpack-encoded
    (one reply to parse, in C), and each view's slice is parsed as Feast's ``_get_features_for_entity`` does
    (inlined; tests/integration/test_serving.py checks the values and timestamps equal ``online_read``'s). A server
    that refuses scripts gets the same commands as one pipeline.
    """

    SCRIPT = ("local out = {} for i, key in ipairs(KEYS) do out[i] = redis.call('HMGET', key, unpack(ARGV)) end "
              "return cmsgpack.pack(out)")

    def __init__(self, store: Any, project: bytes, version: int, fields: list[Any],
                 slices: list[tuple[str, int, int, list[str]]]) -> None:
        self.store, self.project, self.version, self.fields, self.slices = store, project, version, fields, slices
        self.keys: dict[int, bytes] = {}
        self.script: Any = None
        self.scripted = True

    @classmethod
    def plan(cls, online: OnlineFeatures) -> _RedisBatch:
        from feast.infra.online_stores.redis import _versioned_fv_name

        store, config = online.online_store, online.config
        fields: list[Any] = []
        slices = []
        for v in online.views:
            name = _versioned_fv_name(v.view, config)
            requested, hset_keys = store._generate_hset_keys_for_features(v.view, list(v.features),
                                                                          fv_name_override=name)
            slices.append((name, len(fields), len(fields) + len(hset_keys), requested))
            fields += hset_keys
        return cls(store, config.project.encode("utf-8"), config.entity_key_serialization_version, fields, slices)

    def key(self, user_id: int) -> bytes:
        key = self.keys.get(user_id)
        if key is None:
            from feast.infra.key_encoding_utils import serialize_entity_key
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            proto = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])
            key = serialize_entity_key(proto, entity_key_serialization_version=self.version) + self.project
            if len(self.keys) >= KEY_CACHE_SIZE:
                self.keys.clear()
            self.keys[user_id] = key
        return key

    def hashes(self, client: Any, keys: list[bytes]) -> list[list[bytes | None]]:
        """Every field of every key (one list per key, in ``fields`` order)."""
        if self.scripted:
            import msgpack
            from redis.exceptions import ResponseError

            try:
                if self.script is None:
                    self.script = client.register_script(self.SCRIPT)
                packed = self.script(keys=keys, args=self.fields, client=client)
            except ResponseError:  # scripting disabled or restricted (a managed Redis): a pipeline instead
                self.scripted = False
            else:
                # cmsgpack packs an empty Lua table as a map and a nil field as false
                return [[v if v else None for v in row] if row else [None] * len(self.fields)
                        for row in (msgpack.unpackb(packed, raw=True) or [])]
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.hmget(key, self.fields)
            return list(pipe.execute())

    def read(self, online: OnlineFeatures, user_ids: list[int]
             ) -> list[list[tuple[datetime | None, dict[str, Any] | None]]]:
        client = self.store._get_client(online.config.online_store)
        rows = self.hashes(client, [self.key(u) for u in user_ids])
        from feast.protos.feast.types.Value_pb2 import Value
        from google.protobuf.timestamp_pb2 import Timestamp

        parse_value, parse_ts = Value.FromString, Timestamp.FromString
        epoch = datetime.fromtimestamp(0, tz=timezone.utc)
        out: list[list[tuple[datetime | None, dict[str, Any] | None]]] = []
        for _, start, end, requested in self.slices:
            # Feast's _get_features_for_entity, inlined: the last field is the view's timestamp (absent: the
            # epoch), every requested feature gets a value (absent: an empty one, i.e. None)
            names = requested[:-1]
            converted: list[tuple[datetime | None, dict[str, Any] | None]] = []
            for row in rows:
                ts_raw = row[end - 1]
                if ts_raw:
                    t = parse_ts(ts_raw)
                    ts = datetime.fromtimestamp(t.seconds + t.nanos / 1_000_000_000.0, tz=timezone.utc)
                else:
                    ts = epoch
                raw = row[start:end - 1]
                converted.append((ts, {f: _python_value(parse_value(b)) if b else None
                                       for f, b in zip(names, raw, strict=True)}))
            out.append(converted)
        return out


class _SqliteRead:
    """Feast's SQLite ``online_read`` (one query per view: every feature row of the users), without its per-call
    key serialization (cached per user), its sort and its parsing of features the model does not ask for. The
    values and timestamps are those of ``online_read`` (tests/integration/test_serving.py compares them)."""

    def __init__(self, version: int, tables: list[tuple[str, frozenset[str]]]) -> None:
        self.version, self.tables = version, tables
        self.keys: dict[int, bytes] = {}

    @classmethod
    def plan(cls, online: OnlineFeatures) -> _SqliteRead:
        from feast.infra.online_stores.sqlite import _quote_id, _table_id

        config = online.config
        versioning = config.registry.enable_online_feature_view_versioning
        return cls(config.entity_key_serialization_version,
                   [(_quote_id(_table_id(config.project, v.view, versioning)), frozenset(v.features))
                    for v in online.views])

    def key(self, user_id: int) -> bytes:
        key = self.keys.get(user_id)
        if key is None:
            from feast.infra.key_encoding_utils import serialize_entity_key
            from feast.protos.feast.types.EntityKey_pb2 import EntityKey
            from feast.protos.feast.types.Value_pb2 import Value

            proto = EntityKey(join_keys=["user_id"], entity_values=[Value(int64_val=user_id)])
            key = serialize_entity_key(proto, entity_key_serialization_version=self.version)
            if len(self.keys) >= KEY_CACHE_SIZE:
                self.keys.clear()
            self.keys[user_id] = key
        return key

    def read(self, online: OnlineFeatures, user_ids: list[int]
             ) -> list[list[tuple[datetime | None, dict[str, Any] | None]]]:
        from feast.protos.feast.types.Value_pb2 import Value

        parse_value = Value.FromString
        conn = online.online_store._get_conn(online.config)
        keys = [self.key(u) for u in user_ids]
        marks = ",".join("?" * len(keys))
        out: list[list[tuple[datetime | None, dict[str, Any] | None]]] = []
        for (table, wanted), v in zip(self.tables, online.views, strict=True):
            found: dict[bytes, tuple[Any, dict[str, bytes]]] = {}
            sql = f"SELECT entity_key, feature_name, value, event_ts FROM {table} WHERE entity_key IN ({marks})"
            for key, name, value, ts in conn.execute(sql, keys):
                entry = found.get(key)
                values = entry[1] if entry is not None else {}
                if name in wanted:
                    values[name] = value
                found[key] = (ts, values)  # as Feast: the timestamp of the entity's last row
            converted: list[tuple[datetime | None, dict[str, Any] | None]] = []
            for key in keys:
                entry = found.get(key)
                if entry is None:
                    converted.append((None, None))
                    continue
                ts, values = entry
                ts = ts.astimezone(timezone.utc) if ts.tzinfo is not None else ts.replace(tzinfo=timezone.utc)
                converted.append((ts, {f: _python_value(parse_value(values[f])) if f in values else None
                                       for f in v.features}))
            out.append(converted)
        return out


_SCALARS = frozenset({"int64_val", "int32_val", "double_val", "float_val", "string_val", "bool_val", "bytes_val"})
KEY_CACHE_SIZE = 1_000_000


def _python_value(value: Any) -> Any:
    """Feast's ``feast_value_type_to_python_type``, with its scalar case inlined (the same value: the field
    itself); every other kind goes to Feast's function."""
    kind = value.WhichOneof("val")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    from feast.type_map import feast_value_type_to_python_type

    return feast_value_type_to_python_type(value)


class _OnlineErrors:
    """``features._online_store`` (Redis errors → ServiceUnavailableError), plus SQLite's own errors."""

    def __init__(self, settings: Settings, inner: Any) -> None:
        self.settings, self.inner = settings, inner

    def __enter__(self) -> None:
        self.inner.__enter__()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> bool:
        import sqlite3

        if exc is not None and isinstance(exc, sqlite3.Error):
            raise ServiceUnavailableError(f"SQLite online store cannot be read ({str(exc).splitlines()[0]}; "
                                          "run: modelsvc materialize)") from None
        return bool(self.inner.__exit__(kind, exc, tb))
