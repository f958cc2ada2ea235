"""Readiness checks of the Feast side (``modelsvc doctor``): the repo, the registry, the online store.

None of them imports feast: ``import feast`` takes 4.5 s on an idle 2-core machine and 8.5-10.5 s under load
(``python -X importtime -c "from feast.protos.feast.core.Registry_pb2 import Registry"``: importing the
registry's protobuf class runs ``feast/__init__``), more than a check should spend. So a file registry is read by
counting the top-level fields of its ``Registry`` message (a dozen lines of protobuf wire format), and the online
store is probed with sqlite3 or one Redis PING.
"""

from __future__ import annotations

import sqlite3

from modelsvc.config import Settings
from modelsvc.health import CheckOutcome, one_line

ONLINE_FIX = {
    "sqlite": "run: modelsvc materialize (creates and fills the SQLite online store)",
    "redis": "check features.redis.host/port/password and that Redis is running",
}


def check_repo(settings: Settings, timeout: float) -> str:
    """The Feast repo folder exists and holds Python definitions."""
    repo = settings.feature_repo_path()
    if not repo.is_dir():
        raise CheckOutcome("fail", f"Feast repo {repo.resolve()} does not exist")
    sources = sorted(p.name for p in repo.glob("*.py"))
    if not sources:
        raise CheckOutcome("fail", f"Feast repo {repo.resolve()} has no Python definitions")
    return f"{repo}: {', '.join(sources)}"


def check_registry(settings: Settings, timeout: float) -> str:
    """The registry exists and reads: a SQL registry's tables, or a file registry's views, services, entities
    (a local file or an object on ``features.registry``'s store)."""
    from modelsvc import storage
    from modelsvc.errors import ModelsvcError

    where = settings.feast_registry()
    path = storage.display(where)
    try:
        storage.require_bucket(where, setting="features.registry")  # a missing bucket fails, not "no registry yet"
        if not storage.is_file(where):
            raise CheckOutcome("warn", f"no registry at {path} yet")
        data = storage.read_bytes(where)
    except ModelsvcError as exc:  # unreachable store, refused credentials, missing bucket: one line
        raise CheckOutcome("fail", str(exc)) from None
    local = storage.local_path(where)
    if data.startswith(b"SQLite format 3\x00") and local is not None:
        with sqlite3.connect(f"file:{local}?mode=ro", uri=True, timeout=timeout) as con:
            tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        return f"{path}: SQL registry ({len(tables)} tables)"
    try:
        counts = _top_level_fields(data)
    except ValueError as exc:
        raise CheckOutcome("fail", f"{path} is not a readable Feast registry ({exc})") from None
    # field numbers of feast.core.Registry (Registry.proto): 1 entities, 6 feature_views, 7 feature_services
    return (f"{path}: {counts.get(6, 0)} feature views, {counts.get(7, 0)} feature services, "
            f"{counts.get(1, 0)} entities")


def _top_level_fields(data: bytes) -> dict[int, int]:
    """Count the top-level fields of a protobuf message by number (see the module doc for why not feast's class)."""

    def varint(pos: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            if pos >= len(data) or shift > 63:
                raise ValueError("truncated varint")
            byte = data[pos]
            pos += 1
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value, pos
            shift += 7

    counts: dict[int, int] = {}
    pos = 0
    while pos < len(data):
        key, pos = varint(pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = varint(pos)
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = varint(pos)
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if pos > len(data):
            raise ValueError("truncated field")
        counts[number] = counts.get(number, 0) + 1
    return counts


def check_online(settings: Settings, timeout: float) -> str:
    """The online store answers: one Redis PING, or the SQLite file's tables."""
    if settings.features.online_store == "redis":
        from modelsvc.errors import require

        require("redis", "redis")
        import redis

        cfg = settings.features.redis
        client = redis.Redis(host=cfg.host, port=cfg.port, db=cfg.db, ssl=cfg.ssl,
                             password=cfg.password.get_secret_value() if cfg.password else None,
                             socket_timeout=min(timeout, 5.0), socket_connect_timeout=min(timeout, 5.0))
        try:
            client.ping()
            info = client.info("server")
        except redis.RedisError as exc:
            raise CheckOutcome("fail", f"Redis at {cfg.host}:{cfg.port}: {one_line(exc)}") from None
        finally:
            client.close()
        return f"redis {cfg.host}:{cfg.port}/{cfg.db}: PONG (server {info.get('redis_version', '?')})"
    path = settings.paths.resolve("feast") / "online_store.db"
    if not path.is_file():
        raise CheckOutcome("warn", f"no SQLite online store at {path} yet")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout) as con:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return f"sqlite {path}: {len(tables)} tables"
