"""The Feast store: the feature repo, its store configuration, materialization and historical retrieval.

The Feast configuration is derived from the settings (``repo_config``): registry and SQLite online store under
``<root>/feast/``, Redis when ``features.online_store`` is ``redis``, and the offline store of the warehouse
engine (local: Feast's DuckDB store over the Parquet tables, see ``modelsvc.features.local``; hive: the
``modelsvc.features.hive`` plugin). The definitions are those of ``<features.repo_path>/definitions.py``, built
with the same settings, so ``feast apply`` in the repo and ``modelsvc materialize`` register the same objects.
A copy of the configuration is written to ``<root>/feast/feature_store.yaml`` for use with the ``feast`` CLI
(``feast -c feature_repo -f data/feast/feature_store.yaml …``).

feast is imported lazily, inside the functions, through :func:`modelsvc.features.runtime.import_feast` (without
typeguard's instrumentation and torch; the definitions are type-checked when they are registered).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import time
from collections.abc import Iterator, Sequence
from datetime import date, datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.errors import ConfigError, DataError, NotFoundError, ServiceUnavailableError, StorageError
from modelsvc.features.names import FEATURE_TS_TAG, LOCAL_OFFLINE_STORE
from modelsvc.features.runtime import enable_type_checks, import_feast
from modelsvc.progress import NULL, Reporter
from modelsvc.timeutil import parse_timestamp

if TYPE_CHECKING:
    import pandas as pd

TIMESTAMP_FIELD = "event_timestamp"
CREATED_TIMESTAMP_FIELD = "created_timestamp"
DEFINITIONS_FILE = "definitions.py"


class ViewMaterialization(BaseModel):
    """What one feature view's materialization did."""

    view: str
    table: str
    start: datetime | None = Field(description="start of the interval written (None when up to date)")
    end: datetime
    rows: int = Field(description="entity rows written to the online store")
    seconds: float
    skipped: bool = False


class MaterializeReport(BaseModel):
    """Result of ``materialize``."""

    project: str
    online_store: str
    end: datetime
    applied: bool = Field(description="the definitions were (re)registered before materializing")
    views: list[ViewMaterialization]
    rows: int
    seconds: float


# -- configuration ---------------------------------------------------------------------------------------------

def repo_path(settings: Settings) -> Path:
    """The Feast repo folder (``features.repo_path``, relative to the project folder)."""
    path = settings.feature_repo_path()
    if not (path / DEFINITIONS_FILE).is_file():
        raise NotFoundError(f"feature repo '{settings.features.repo_path}' has no {DEFINITIONS_FILE} "
                            "(set features.repo_path to the feature_repo folder)")
    return path


def settings_for_repo(repo_dir: Path) -> Settings:
    """Settings for the ``feast`` CLI run inside the repo: ``MODELSVC_CONFIG_DIR`` (default ``<repo>/../configs``),
    relative state paths taken from the folder above the repo."""
    from modelsvc.config import load_settings

    project_dir = repo_dir.resolve().parent
    settings = load_settings(os.environ.get("MODELSVC_CONFIG_DIR") or project_dir / "configs")
    from modelsvc.storage import local_path

    root = local_path(settings.paths.root)
    if root is not None and not root.is_absolute():
        settings.paths.root = str(project_dir / root)
    settings.features.repo_path = repo_dir.resolve()
    return settings


def _offline_store_config(settings: Settings, *, for_file: bool = False) -> dict[str, Any]:
    if settings.warehouse.engine == "hive":
        import_feast()
        from modelsvc.features.hive import offline_store_config

        return dict(offline_store_config(settings, for_file=for_file))
    return {"type": LOCAL_OFFLINE_STORE}


def _online_store_config(settings: Settings, *, for_file: bool = False) -> dict[str, Any]:
    if settings.features.online_store == "redis":
        redis = settings.features.redis
        if for_file and redis.password is not None:
            # never write the secret: Feast expands environment variables in feature_store.yaml
            conn = redis.model_copy(update={"password": None}).connection_string()
            conn += ",password=${MODELSVC_FEATURES__REDIS__PASSWORD}"
        else:
            conn = redis.connection_string()
        return {"type": "redis", "connection_string": conn}
    return {"type": "sqlite", "path": str(settings.paths.resolve("feast") / "online_store.db")}


def store_config(settings: Settings, *, for_file: bool = False) -> dict[str, Any]:
    """The content of ``feature_store.yaml`` for ``settings``."""
    return {
        "project": settings.features.project,
        "provider": "local",
        "registry": {"registry_type": "file", "path": settings.feast_registry(), "cache_ttl_seconds": 0},
        "offline_store": _offline_store_config(settings, for_file=for_file),
        "online_store": _online_store_config(settings, for_file=for_file),
        "entity_key_serialization_version": 3,
    }


def repo_config(settings: Settings) -> Any:
    """A Feast ``RepoConfig`` for ``settings``."""
    import_feast()
    from feast.repo_config import RepoConfig

    config = store_config(settings)
    if config["offline_store"] == {"type": LOCAL_OFFLINE_STORE}:
        # by name: Feast then imports the store (ibis, its DuckDB store: about 0.4 s) when a command first uses
        # it, not when the configuration is validated; serving and a materialize with nothing to do never do
        config["offline_store"] = LOCAL_OFFLINE_STORE
    return RepoConfig(repo_path=repo_path(settings), **config)


def write_store_yaml(settings: Settings) -> str:
    """Write ``<paths.feast>/feature_store.yaml`` (the generated configuration, no secrets) and return where:
    a local folder, or beside the registry on object storage when ``paths.feast`` is under a URI root."""
    import yaml

    from modelsvc import storage

    path = storage.join(settings.paths.location("feast"), "feature_store.yaml")
    text = "# generated by modelsvc from the settings: edit configs/*.yaml instead\n"
    text += yaml.safe_dump(store_config(settings, for_file=True), sort_keys=False)
    if not storage.is_file(path) or storage.read_text(path) != text:
        storage.write_text(path, text)
    return path


def check_registry_location(settings: Settings) -> str:
    """The registry's location, checked before Feast opens it: a bucket that exists and takes our credentials
    (66, 77, 69 naming ``features.registry``); Feast's own errors say less (a 403 for a missing bucket)."""
    from modelsvc import storage

    where = settings.feast_registry()
    storage.require_bucket(where, setting="features.registry")
    local = storage.local_path(where)
    if local is not None:  # Feast creates the registry's folder, not its parents
        local.parent.mkdir(parents=True, exist_ok=True)
    return where


def batch_source(settings: Settings, table: str, *, feature_ts_column: str) -> Any:
    """The Feast data source of a feature table for the configured engine (called by the repo definitions)."""
    import_feast()
    tags = {FEATURE_TS_TAG: feature_ts_column}
    if settings.warehouse.engine == "hive":
        from modelsvc.features.hive import hive_source

        return hive_source(settings, table, timestamp_field=TIMESTAMP_FIELD,
                           created_timestamp_column=CREATED_TIMESTAMP_FIELD, tags=tags)
    from feast import FileSource
    from feast.data_format import ParquetFormat

    return FileSource(
        name=table,
        path=str(settings.paths.resolve("warehouse") / table),
        file_format=ParquetFormat(),
        timestamp_field=TIMESTAMP_FIELD,
        created_timestamp_column=CREATED_TIMESTAMP_FIELD,
        tags=tags,
        description=f"warehouse table {table} (Parquet, partitioned by ds)",
    )


def load_definitions(settings: Settings) -> list[Any]:
    """The Feast objects of the repo, built for ``settings``. A wrong argument is a ConfigError when Feast's type
    checks are on (see :func:`apply_definitions`)."""
    from typeguard import TypeCheckError

    path = repo_path(settings) / DEFINITIONS_FILE
    import_feast()
    spec = importlib.util.spec_from_file_location("_modelsvc_feature_definitions", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        build = module.build_definitions
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise ConfigError(f"feature definitions {path} cannot be loaded: {exc}") from exc
    try:
        return list(build(settings))
    except TypeCheckError as exc:
        raise ConfigError(f"feature definitions {path} are invalid: {exc}") from exc


# -- the store -------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Feast prints progress on stdout; keep stdout for our own output (--json)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def check_online_store(settings: Settings, *, timeout_s: float = 3.0) -> None:
    """Fail fast (one PING, no retries) when the Redis online store is unreachable; SQLite needs no check."""
    if settings.features.online_store != "redis":
        return
    from modelsvc.errors import require

    require("redis", "redis")
    import redis as redis_py
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    cfg = settings.features.redis
    client = redis_py.Redis(host=cfg.host, port=cfg.port, db=cfg.db, ssl=cfg.ssl,
                            password=cfg.password.get_secret_value() if cfg.password else None,
                            socket_connect_timeout=timeout_s, socket_timeout=timeout_s, retry=Retry(NoBackoff(), 0))
    try:
        with _online_store(settings):
            client.ping()
    finally:
        client.close()


@contextlib.contextmanager
def _online_store(settings: Settings) -> Iterator[None]:
    """An unreachable Redis online store is a ServiceUnavailableError, a command it refuses a StorageError (no
    password in either message)."""
    try:
        yield
    except Exception as exc:
        if settings.features.online_store == "redis" and type(exc).__module__.split(".")[0] == "redis":
            from redis.exceptions import ResponseError

            redis = settings.features.redis
            if isinstance(exc, ResponseError):
                raise StorageError(f"Redis online store at {redis.host}:{redis.port} refused a command: "
                                   f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            raise ServiceUnavailableError(
                f"Redis online store at {redis.host}:{redis.port} is unreachable ({type(exc).__name__})") from None
        raise


def feature_store(settings: Settings, *, apply: bool = True) -> Any:
    """A ``FeatureStore`` for ``settings``; with ``apply``, the definitions are registered when they changed."""
    import_feast()
    from feast import FeatureStore

    check_registry_location(settings)
    if settings.features.online_store == "sqlite":  # a local file: 78 naming paths.feast under a URI root
        settings.paths.resolve("feast").mkdir(parents=True, exist_ok=True)
    write_store_yaml(settings)
    store = FeatureStore(config=repo_config(settings))
    if apply:
        apply_definitions(settings, store)
    return store


def apply_definitions(settings: Settings, store: Any) -> bool:
    """Register the repo's objects unless the registry already holds the same ones; True when it applied.

    Re-applying an unchanged view would keep working, but skipping it keeps the registry untouched. Objects that
    are registered are first built again with Feast's type checks of their arguments (typeguard's, deferred by
    :func:`~modelsvc.features.runtime.import_feast`), on for the classes they are made of, as are definitions
    that fail to compare; definitions that fail to load are built again with all of Feast's checks on."""
    objects = None
    try:
        objects = load_definitions(settings)
        if all(_same(_registered(store, obj), obj) for obj in objects):
            return False
    except Exception:
        # the checks of the classes these objects are made of (all of them when the definitions did not load), if
        # some are still off: then a wrong argument is reported as Feast's checks report it
        if enable_type_checks(objects):
            load_definitions(settings)
        raise
    if enable_type_checks(objects):  # the classes these definitions are made of
        objects = load_definitions(settings)
    with _quiet():
        store.apply(objects)
    return True


def _same(registered: Any, obj: Any) -> bool:
    """Equal definitions, ignoring what the registry adds (timestamps, resolved entity columns)."""
    if registered is None:
        return False

    def scrub(msg: Any) -> Any:
        for field, value in msg.ListFields():
            if field.name in {"meta", "entity_columns"}:
                msg.ClearField(field.name)
            elif field.message_type is not None and not field.message_type.GetOptions().map_entry:
                for item in (value if field.is_repeated else [value]):
                    scrub(item)
        return msg

    def spec(o: Any) -> Any:
        return scrub(o.to_proto().spec)

    return bool(spec(registered) == spec(obj))


def _registered(store: Any, obj: Any) -> Any:
    from feast import Entity, FeatureService, FeatureView
    from feast.errors import FeastObjectNotFoundException

    getters: list[tuple[type, Any]] = [(FeatureView, store.get_feature_view),
                                       (FeatureService, store.get_feature_service), (Entity, store.get_entity)]
    name = obj.name
    for kind, get in getters:
        if isinstance(obj, kind):
            try:
                return get(name)
            except FeastObjectNotFoundException:
                return None
    return None


def _views(store: Any, settings: Settings) -> list[Any]:
    """The feature views of the model's feature service, in service order."""
    service = _service(store, settings)
    return [store.get_feature_view(p.name) for p in service.feature_view_projections]


def _service(store: Any, settings: Settings) -> Any:
    from feast.errors import FeastObjectNotFoundException

    try:
        return store.get_feature_service(settings.features.feature_service)
    except FeastObjectNotFoundException:
        raise ConfigError(f"feature service '{settings.features.feature_service}' is not defined in "
                          f"{settings.features.repo_path}/{DEFINITIONS_FILE} (features.feature_service)") from None


def feature_refs(store: Any, settings: Settings) -> list[str]:
    """``view:feature`` references of the model's feature service."""
    return [f"{p.name_to_use()}:{f.name}" for p in _service(store, settings).feature_view_projections
            for f in p.features]


def _ts_column(view: Any) -> str | None:
    return (view.batch_source.tags or {}).get(FEATURE_TS_TAG)


def _check_tables(settings: Settings, views: Sequence[Any]) -> None:
    """Locally, a missing feature table is a NotFoundError naming it (the Hive store reports its own)."""
    if settings.warehouse.engine != "duckdb":
        return
    for view in views:
        folder = Path(view.batch_source.path)
        if not any(folder.glob("ds=*/*.parquet")):
            raise NotFoundError(f"feature table '{folder.name}' not found under {folder.parent} "
                                f"(feature view {view.name}); run: modelsvc etl")


# -- materialize -----------------------------------------------------------------------------------------------

def materialize(settings: Settings, *, end: str | datetime | date | None = None,
                reporter: Reporter = NULL, bulk: bool = True) -> MaterializeReport:
    """Load the latest feature values up to ``end`` (default: now) into the online store, incrementally.

    Each view continues from the end of its previous materialization (Feast ``materialize_incremental``); the
    first run starts at ``end - ttl``, so the online store holds exactly the values still valid at ``end``.
    Running it again with the same ``end`` writes nothing.

    With ``bulk`` (the default), a view the online store can take in bulk
    (:func:`modelsvc.features.online.bulk_supported`: SQLite or Redis, plain types) is written by
    :mod:`modelsvc.features.online`: the same rows and bytes as Feast's materialization, several times faster;
    ``bulk=False`` runs Feast's own."""
    import_feast()
    from feast.utils import make_tzaware

    from modelsvc.features.online import bulk_supported
    from modelsvc.features.online import write as write_online

    t0 = time.perf_counter()
    end_ts = _end_timestamp(end)
    check_online_store(settings)
    store = feature_store(settings, apply=False)
    applied = apply_definitions(settings, store)
    views = _views(store, settings)
    _check_tables(settings, views)
    results = []
    with reporter.task("materialize", total=len(views)) as task:
        for view in views:
            t1 = time.perf_counter()
            previous = make_tzaware(view.most_recent_end_time) if view.most_recent_end_time else None
            start = previous if previous is not None else end_ts - view.ttl
            if start >= end_ts:
                results.append(ViewMaterialization(view=view.name, table=view.batch_source.name, start=None,
                                                   end=end_ts, rows=0, seconds=time.perf_counter() - t1,
                                                   skipped=True))
                task.advance(1, view=view.name, rows=0)
                continue
            if bulk and bulk_supported(store, view):
                # the rows Feast would write, in its layout, in bulk; then Feast's watermark
                with _online_store(settings):
                    rows = write_online(store, view, _pull_latest(store, view, start, end_ts).to_arrow())
                store.registry.apply_materialization(view, store.project, start, end_ts)
            else:
                rows = _count_latest(store, view, start, end_ts)
                with _quiet(), _online_store(settings):
                    if previous is None:
                        store.materialize(start_date=start, end_date=end_ts, feature_views=[view.name])
                    else:
                        store.materialize_incremental(end_date=end_ts, feature_views=[view.name])
            results.append(ViewMaterialization(view=view.name, table=view.batch_source.name, start=start,
                                               end=end_ts, rows=rows, seconds=time.perf_counter() - t1))
            task.advance(1, view=view.name, rows=rows)
            reporter.log(f"{view.name}: {rows} rows from {start:%Y-%m-%d %H:%M} to {end_ts:%Y-%m-%d %H:%M}")
    return MaterializeReport(project=settings.features.project, online_store=settings.features.online_store,
                             end=end_ts, applied=applied, views=results, rows=sum(r.rows for r in results),
                             seconds=time.perf_counter() - t0)


def _end_timestamp(end: str | datetime | date | None) -> datetime:
    if end is None:
        return datetime.now(timezone.utc).replace(microsecond=0)
    if isinstance(end, date) and not isinstance(end, datetime):
        end = datetime(end.year, end.month, end.day, tzinfo=timezone.utc)
    return parse_timestamp(end, option="--end-date")


def _count_latest(store: Any, view: Any, start: datetime, end: datetime) -> int:
    """Entity rows that materializing [start, end] writes: one per entity with a row in the interval (the same
    offline query Feast runs, without the feature columns)."""
    return int(_pull_latest(store, view, start, end, features=False).to_arrow().num_rows)


def _pull_latest(store: Any, view: Any, start: datetime, end: datetime, *, features: bool = True) -> Any:
    """The offline store's latest row per entity in [start, end]: what materializing the interval writes."""
    source = view.batch_source
    return store._get_provider().offline_store.pull_latest_from_table_or_query(
        config=store.config, data_source=source, join_key_columns=[c.name for c in view.entity_columns],
        feature_name_columns=[f.name for f in view.features] if features else [],
        timestamp_field=source.timestamp_field, created_timestamp_column=source.created_timestamp_column,
        start_date=start, end_date=end,
    )


# -- retrieval -------------------------------------------------------------------------------------------------

def get_online_features(settings: Settings, user_ids: Sequence[int]) -> pd.DataFrame:
    """The online values of the model's features for ``user_ids`` (one row per id, None where missing)."""
    check_online_store(settings)
    store = feature_store(settings, apply=False)
    service = _service(store, settings)
    rows = [{"user_id": int(u)} for u in user_ids]
    with _quiet(), _online_store(settings):
        return store.get_online_features(features=service, entity_rows=rows).to_df()


class HistoricalFeatures(BaseModel):
    """Features joined point-in-time to entity rows, with the timestamp of each joined feature row."""

    model_config = {"arbitrary_types_allowed": True}

    table: Any = Field(description="pyarrow.Table: entity columns, features, feature-timestamp columns")
    feature_refs: list[str]
    timestamp_columns: dict[str, list[str]] = Field(
        description="feature-timestamp column -> the features it dates")


def historical_features(settings: Settings, entity_df: pd.DataFrame) -> HistoricalFeatures:
    """Feast ``get_historical_features`` of the feature service for ``entity_df`` (``event_timestamp`` + the entity
    key + any other columns, kept). Also returns each view's feature-row timestamp for the leakage check."""
    store = feature_store(settings)
    views = _views(store, settings)
    _check_tables(settings, views)
    refs = feature_refs(store, settings)
    ts_columns: dict[str, list[str]] = {}
    extra = []
    for view in views:
        col = _ts_column(view)
        if col is None:
            raise ConfigError(f"feature view {view.name}: its source lacks the tag {FEATURE_TS_TAG}")
        ts_columns[col] = [r.split(":", 1)[1] for r in refs if r.split(":", 1)[0] == view.name]
        extra.append(f"{view.name}:{col}")
    with _quiet():
        try:
            table = store.get_historical_features(entity_df=entity_df, features=refs + extra).to_arrow()
        except Exception as exc:  # duckdb / ibis report unreadable or wrongly typed tables with many types
            if type(exc).__module__.split(".")[0] in {"duckdb", "ibis", "pyarrow"}:
                raise DataError(f"point-in-time join failed reading the feature tables: {_first_line(exc)}") \
                    from exc
            raise
    return HistoricalFeatures(table=table, feature_refs=refs, timestamp_columns=ts_columns)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

