"""The typed settings tree of modelsvc and how it is loaded.

Sources, highest priority first:

1. keyword overrides passed to :func:`load_settings` (what the CLI sets),
2. ``MODELSVC_…`` environment variables, nested with ``__`` (``MODELSVC_TRAINING__LR=0.01``),
3. a ``.env`` file in the working directory (same names),
4. the profile file ``<config dir>/profiles/<profile>.yaml`` when a profile is chosen
   (``--profile`` or ``MODELSVC_PROFILE``),
5. the YAML files of the config directory: ``base.yaml`` then ``model_params.yaml`` (any other ``*.yaml``
   directly in the directory is read too, in name order),
6. the defaults below.

A few standard variables of the backends are honoured when the matching field is unset:
``MLFLOW_TRACKING_URI`` (``mlflow.tracking_uri``) and ``RAY_ADDRESS`` (``ray.address``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from modelsvc.errors import ConfigError

ENV_PREFIX = "MODELSVC_"
IDENTIFIER_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"


class Section(BaseModel):
    """Base for every nested section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class PathsSettings(Section):
    """Where state lives. Every relative path is resolved against ``root``.

    ``root``, ``datasets`` and ``reports`` are *locations*: a local path or a URI (``s3://bucket/prefix`` with
    ``AWS_ENDPOINT_URL`` for MinIO/Ceph, ``gs://``, ``hdfs://``, ``file://``); a relative sub-path under a URI root
    is ``<root URI>/<sub>``. ``warehouse`` (local engine), ``feast`` (SQLite online store), ``mlflow`` (SQLite
    store) and ``state`` (run lock, command logs) need a local disk: when ``root`` is a URI each must be an
    absolute local path of its own, or the command that needs it fails with exit 78 naming the setting.

    A relative ``root`` starts at the project folder (the folder holding the config directory), so a command
    run from another folder finds the same state."""

    root: str = Field("data", description="one folder (or URI: s3://bucket/prefix, gs://, hdfs://, file://) for "
                      "all state")
    warehouse: Path = Field(Path("warehouse"), description="Parquet tables (local engine; a local folder)")
    datasets: str = Field("datasets", description="versioned training datasets (local path or URI)")
    feast: Path = Field(Path("feast"), description="Feast registry and SQLite online store")
    mlflow: Path = Field(Path("mlflow"), description="local MLflow store (SQLite + artifacts)")
    ray: Path = Field(Path("ray"), description="Ray Train storage (checkpoints); see ray.storage_path for a URI")
    reports: str = Field("reports", description="evaluation reports and run summaries (local path or URI)")
    state: Path | None = Field(None, description="local folder for the run lock and command logs (default: root; "
                               "required, absolute, when root is a URI)")

    # the project folder (set by load_settings: the parent of the config directory); None: the working directory
    _base: Path | None = PrivateAttr(default=None)

    @field_validator("root", "datasets", "reports", mode="before")
    @classmethod
    def _location(cls, v: Any, info: Any) -> Any:
        return _checked_location(v, f"paths.{info.field_name}")

    def __eq__(self, other: object) -> bool:  # the values only: where the settings were loaded from is no value
        return isinstance(other, PathsSettings) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # as every pydantic model

    def base(self) -> Path:
        """The folder relative paths (``root``, ``features.repo_path``) start from."""
        return self._base if self._base is not None else Path.cwd()

    def root_is_uri(self) -> bool:
        from modelsvc.storage import is_uri

        return is_uri(self.root)

    def location(self, name: str) -> str:
        """Where one of the folders above lives (``root`` itself included): a URI, or an absolute local path."""
        from modelsvc.storage import is_uri, join, local_path

        root_local = local_path(self.root)
        root = self.root if root_local is None else str(
            root_local if root_local.is_absolute() else self.base() / root_local)
        if name == "root":
            return root
        if name == "state":
            if self.state is None:
                return root
            sub: str = str(self.state)
        else:
            sub = str(getattr(self, name))
        if is_uri(sub):
            return sub
        sub_local = local_path(sub)
        assert sub_local is not None
        if sub_local.is_absolute():
            return str(sub_local)
        return join(root, str(sub_local))

    def resolve(self, name: str) -> Path:
        """The absolute local path of one of the folders above, for what needs a local disk; a ConfigError
        (78) naming the setting to use when it is a URI (``root`` a URI and the folder not set to a local path)."""
        from modelsvc.storage import display, is_uri, local_path

        where = self.location(name)
        if is_uri(where):
            setting = "paths.state" if name == "root" else f"paths.{name}"
            if name in ("datasets", "reports", "root") and is_uri(getattr(self, name)):
                raise ConfigError(f"paths.{name} is a URI ({display(where)}); this needs a local folder")
            hint = _LOCAL_ONLY.get(name, "")
            raise ConfigError(f"{setting} must be a local folder when paths.root is a URI ({display(self.root)}); "
                              f"set it to an absolute path{hint}")
        path = local_path(where)
        assert path is not None
        return path


# what each local-disk folder is for when paths.root is a URI, and the alternative to setting it
_LOCAL_ONLY = {
    "warehouse": ", or use warehouse.engine: hive",
    "mlflow": ", or set mlflow.tracking_uri (MLFLOW_TRACKING_URI) to a tracking server",
    "feast": ", or use features.online_store: redis",
    "state": " (the run lock and command logs; e.g. MODELSVC_PATHS__STATE=/var/lib/modelsvc)",
}


class TablesSettings(Section):
    """Names of the warehouse tables (identifiers: letters, digits, underscore)."""

    raw_events: str = Field("raw_events", pattern=IDENTIFIER_PATTERN)
    user_features: str = Field("user_features_precomputed", pattern=IDENTIFIER_PATTERN)
    realtime_features: str = Field("user_realtime_features", pattern=IDENTIFIER_PATTERN)
    click_oracle: str = Field("demo_click_oracle", pattern=IDENTIFIER_PATTERN)


class HiveSettings(Section):
    """HiveServer2 connection (used when ``warehouse.engine`` is ``hive``)."""

    host: str = "localhost"
    port: int = Field(10000, ge=1, le=65535)
    database: str = Field("default", pattern=IDENTIFIER_PATTERN)
    username: str | None = None
    password: SecretStr | None = None
    auth: Literal["NONE", "NOSASL", "LDAP", "CUSTOM", "KERBEROS"] = "NONE"
    kerberos_service_name: str | None = None
    connect_timeout_s: float = Field(30.0, gt=0)
    query_timeout_s: float = Field(3600.0, gt=0)
    scratch_database: str | None = Field(
        None, pattern=IDENTIFIER_PATTERN, description="where temporary tables go (default: database)"
    )
    backfill_chunk_days: int = Field(
        31, ge=1,
        description="ETL days computed per statement on the server (dynamic-partition INSERT OVERWRITE); 1 sends "
                    "two per-day statements per day, each rereading the lookback (docs/hive.md)")


class WarehouseSettings(Section):
    """The SQL engine that holds raw events and feature tables."""

    engine: Literal["duckdb", "hive"] = "duckdb"
    threads: int | None = Field(None, ge=1, description="local engine threads (default: all cores)")
    keep_replaced_s: float = Field(
        300, ge=0, allow_inf_nan=False,
        description="local engine: seconds a replaced partition's files are kept for readers that listed them "
                    "before the swap (deleted by a later write of the table)")


class EtlSettings(Section):
    """Feature ETL windows (the semantics are documented in docs/data-contract.md)."""

    lookback_days: int = Field(30, ge=1, description="raw-event days read for one snapshot")
    orders_window_days: int = Field(7, ge=1)
    purchase_window_days: int = Field(30, ge=1)
    realtime_window_minutes: int = Field(10, ge=1)


class RedisSettings(Section):
    """Redis online store (used when ``features.online_store`` is ``redis``)."""

    host: str = "localhost"
    port: int = Field(6379, ge=1, le=65535)
    db: int = Field(0, ge=0)
    password: SecretStr | None = None
    ssl: bool = False

    def connection_string(self) -> str:
        """Feast's redis connection string (contains the password: never log it)."""
        parts = [f"{self.host}:{self.port}", f"db={self.db}"]
        if self.password is not None:
            parts.append(f"password={self.password.get_secret_value()}")
        if self.ssl:
            parts.append("ssl=true")
        return ",".join(parts)


class FeaturesSettings(Section):
    """The Feast feature store."""

    repo_path: Path = Field(Path("feature_repo"), description="the Feast repo (relative: to the project folder, "
                            "which holds the config directory)")
    project: str = Field("modelsvc", pattern=IDENTIFIER_PATTERN)
    online_store: Literal["sqlite", "redis"] = "sqlite"
    registry: str | None = Field(None, description="the Feast registry file: a local path or a URI (s3://bucket/"
                                 "feast/registry.db, gs://, hdfs://; relative: under paths.root); "
                                 "default <paths.feast>/registry.db")
    feature_service: str = Field("ctr_model_v1", pattern=IDENTIFIER_PATTERN)
    offline_ttl_days: int = Field(7, ge=1)
    realtime_ttl_minutes: int = Field(30, ge=1)
    redis: RedisSettings = RedisSettings()

    @field_validator("registry", mode="before")
    @classmethod
    def _registry_location(cls, v: Any) -> Any:
        return _checked_location(v, "features.registry")


class SplitSettings(Section):
    """Time-based split of a dataset. Either fractions of the time range or explicit cut-offs."""

    validation_fraction: float = Field(0.15, ge=0, lt=1)
    test_fraction: float = Field(0.15, gt=0, lt=1)
    validation_start: str | None = Field(None, description="ISO timestamp: first validation impression time")
    test_start: str | None = Field(None, description="ISO timestamp: first test impression time")

    @model_validator(mode="after")
    def _check(self) -> SplitSettings:
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be < 1")
        if (self.validation_start is None) != (self.test_start is None):
            raise ValueError("set both validation_start and test_start, or neither")
        return self


class DatasetSettings(Section):
    """Training datasets built by ``build-dataset``."""

    name: str = Field("ctr_training", pattern=IDENTIFIER_PATTERN)
    label: str = Field("is_clicked", pattern=IDENTIFIER_PATTERN)
    split: SplitSettings = SplitSettings()
    file_rows: int = Field(1_000_000, ge=1, description="most rows in one Parquet file of a version (each file "
                           "holds one split): the unit Ray workers read in parallel")
    row_group_rows: int = Field(1_000_000, ge=1, description="rows per Parquet row group: the smallest part a "
                                "worker reads of a file")


class MlflowSettings(Section):
    """MLflow tracking and registry."""

    tracking_uri: str | None = Field(None, description="default: MLFLOW_TRACKING_URI, else a local SQLite store")
    registry_uri: str | None = None
    experiment: str = "modelsvc-ctr"
    registered_model: str = Field("ctr_model", pattern=r"^[A-Za-z0-9_.\-]{1,128}$")
    production_alias: str = Field("production", pattern=r"^[a-z][a-z0-9_\-]{0,63}$")
    username: str | None = None
    password: SecretStr | None = None
    connect_timeout_s: float = Field(10.0, gt=0, description="an http(s) tracking server that accepts no "
                                     "connection within this is reported unreachable (exit 69) at once")
    child_process: Literal["auto", "always", "never"] = Field(
        "auto", description="train logs to MLflow from a child process, beside the epochs: auto = unless MLflow "
        "is imported in the calling process already")


def _checked_location(v: Any, setting: str) -> Any:
    """A location setting's value checked as :func:`modelsvc.storage.check_location` does (a ValueError, which
    the settings loader reports with the source that set it: 78)."""
    from modelsvc.storage import check_location

    if isinstance(v, os.PathLike):
        v = os.fspath(v)
    if isinstance(v, str):
        if not v.strip():
            raise ValueError("must not be empty")
        try:
            check_location(v, setting=setting)
        except ConfigError as exc:
            raise ValueError(str(exc).split(": ", 1)[1]) from None
    return v


class RaySettings(Section):
    """Where training runs: a local Ray started on demand, or a cluster."""

    address: str | None = Field(None, description="default: RAY_ADDRESS, else start a local Ray")
    storage_path: str | None = Field(None, description="Ray Train storage (local path or URI); default <root>/ray")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray (default: all)")
    connect_timeout_s: float = Field(30.0, gt=0, description="a Ray cluster (ray.address) that does not answer "
                                     "within this is reported unreachable (exit 69) instead of waiting without end")
    poll_interval_s: float = Field(
        0.25, gt=0, le=60,
        description="how often the Ray Train controller polls its workers; every epoch's checkpoint report waits "
                    "for the next poll (Ray's own default, 2 s, added up to 2 s to each epoch). "
                    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S in the environment takes precedence")

    @field_validator("storage_path", mode="before")
    @classmethod
    def _storage_location(cls, v: Any) -> Any:
        return _checked_location(v, "ray.storage_path")


class ScalingSettings(Section):
    """Ray Train scaling."""

    num_workers: int | Literal["auto"] = Field(
        "auto", description="Ray Train workers; 0 runs the training function in this process (Ray Train's local "
                            "mode, no Ray started); auto: 0 without a Ray address, else 1")
    use_gpu: Literal["auto", True, False] = "auto"
    cpus_per_worker: float = Field(1.0, gt=0)

    @field_validator("num_workers")
    @classmethod
    def _not_negative(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be auto or a number >= 0")
        return v

    @field_validator("use_gpu", mode="before")
    @classmethod
    def _parse_bool(cls, v: Any) -> Any:
        if isinstance(v, str) and v.lower() in {"true", "false", "auto"}:
            return {"true": True, "false": False, "auto": "auto"}[v.lower()]
        return v


class TrainingLoopSettings(Section):
    """The training loop."""

    lr: float = Field(3e-3, gt=0, le=1)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(4096, ge=1, description="the global batch: each of N workers draws batch_size/N "
                            "rows a step, so lr and steps per epoch do not change with num_workers")
    weight_decay: float = Field(0.0, ge=0)
    seed: int = 42
    early_stopping_patience: int = Field(2, ge=1, description="stop after this many epochs in a row without "
                                         "a meaningful improvement (see min_delta)")
    min_delta: float = Field(0.001, ge=0, description="an epoch improves meaningfully when its validation log loss "
                             "is more than this below the last meaningful one; the best (lowest) epoch is the model "
                             "either way (0: any improvement counts)")
    max_failures: int = Field(1, ge=0)
    data_path: Literal["auto", "resident", "streaming"] = Field(
        "auto", description="resident: shard in device memory; streaming: pinned batches with prefetch"
    )
    resident_max_bytes: int | None = Field(None, ge=1, description="override the device-memory budget")


class ModelSettings(Section):
    """The MLP."""

    embedding_dim: int = Field(8, ge=1)
    hidden_layers: list[int] = Field(default_factory=lambda: [128, 64], min_length=1)
    dropout: float = Field(0.1, ge=0, lt=1)

    @field_validator("hidden_layers")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError("every hidden layer needs at least 1 unit")
        return v


class GateSettings(Section):
    """The promotion gate: absolute bounds and do-no-harm tolerances against production."""

    min_auc: float = Field(0.6, ge=0, le=1)
    max_log_loss: float = Field(0.7, gt=0)
    max_brier: float = Field(0.25, gt=0)
    max_calibration_error: float = Field(0.05, gt=0)
    auc_tolerance: float = Field(0.005, ge=0, description="candidate AUC may be this much below production")
    log_loss_tolerance: float = Field(0.01, ge=0, description="candidate log loss may be this much above")


class EvaluationSettings(Section):
    """Evaluation of a candidate against production."""

    gate: GateSettings = GateSettings()
    calibration_bins: int = Field(10, ge=2)
    slice_column: str = Field("last_seen_platform", pattern=IDENTIFIER_PATTERN)


class ServingSettings(Section):
    """The prediction service (``modelsvc serve``), one-off predictions and batch scoring."""

    host: str = Field("127.0.0.1", description="address the service listens on (0.0.0.0 in a container)")
    port: int = Field(8080, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="server processes (one per core)")
    reload_interval_s: float = Field(30.0, gt=0, description="how often the production alias is checked; a moved "
                                     "alias loads the new version beside the old, then swaps it in")
    max_batch: int = Field(1000, ge=1, description="most users in one request (more: HTTP 413)")
    online_timeout_s: float = Field(0.5, gt=0, description="Redis socket timeout of an online read: a store that "
                                    "does not answer within it fails the request with 503")
    predictions_table: str = Field("predictions", pattern=IDENTIFIER_PATTERN,
                                   description="warehouse table written by `modelsvc score`")
    score_ray_min_days: int = Field(8, ge=1, description="`modelsvc score` of at least this many days runs on Ray "
                                    "(each day a task on an actor that loaded the model once) when a Ray cluster "
                                    "is configured (ray.address / RAY_ADDRESS); shorter ranges, or no cluster: "
                                    "in this process")
    score_ray_actors: int = Field(0, ge=0, description="Ray actors of `modelsvc score` on a cluster (1 CPU each); "
                                  "0: one per CPU of the cluster, never more than the days")


class PrefectSettings(Section):
    """Prefect flows (``modelsvc.flows``, extra ``prefect``): retries of transient failures and task caching."""

    retries: int = Field(3, ge=0, le=50, description="retries of a task that failed with exit 69 or 75 (a "
                         "service unavailable, retry later); other failures are not retried")
    retry_delay_s: float = Field(30.0, ge=0, description="wait before the first retry; each next one waits twice "
                                 "as long")
    cache: bool = Field(True, description="skip a step whose inputs (raw partitions, settings, upstream result) "
                        "are unchanged since its last successful run; results kept under <root>/prefect")


class Settings(BaseSettings):
    """The root of the settings tree."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="forbid",
        validate_default=True,
        case_sensitive=False,
        allow_inf_nan=False,
        # a shared .env also holds other programs' variables (MLFLOW_TRACKING_URI, ...): only MODELSVC_ names
        # are settings, and one that names no setting is an error
        dotenv_filtering="match_prefix",
    )

    profile: str | None = None
    paths: PathsSettings = PathsSettings()
    tables: TablesSettings = TablesSettings()
    warehouse: WarehouseSettings = WarehouseSettings()
    hive: HiveSettings = HiveSettings()
    etl: EtlSettings = EtlSettings()
    features: FeaturesSettings = FeaturesSettings()
    dataset: DatasetSettings = DatasetSettings()
    mlflow: MlflowSettings = MlflowSettings()
    ray: RaySettings = RaySettings()
    scaling: ScalingSettings = ScalingSettings()
    training: TrainingLoopSettings = TrainingLoopSettings()
    model: ModelSettings = ModelSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    serving: ServingSettings = ServingSettings()
    prefect: PrefectSettings = PrefectSettings()

    # filled by load_settings, not by users
    config_dir: Path | None = Field(None, exclude=True)
    # MLFLOW_TRACKING_URI / RAY_ADDRESS found in .env (os.environ wins), see load_settings
    _dotenv_fallbacks: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # highest priority first: overrides > environment > .env > profile YAML > YAML files (> defaults);
        # pydantic-settings deep-merges them. Under load_settings each source records where its values came from.
        load = _LOAD.get()
        if load is None:  # Settings() alone: no YAML
            return (init_settings, env_settings, dotenv_settings)
        return (
            _Tracked(init_settings, load, lambda path: "command line"),
            _Tracked(env_settings, load, lambda path: f"environment {_variable(load.env_names, path)}"),
            _Tracked(load.dotenv, load, lambda path: f"{DOTENV} {_variable(load.dotenv_names, path)}"),
            *(_Tracked(_YamlFile(settings_cls, f), load, _constant(str(f))) for f in reversed(load.yaml_files)),
        )

    # -- resolved values -------------------------------------------------------------------------------------
    def tracking_uri(self) -> str:
        """The MLflow tracking URI: config, then MLFLOW_TRACKING_URI, then a local SQLite store."""
        if self.mlflow.tracking_uri:
            return self.mlflow.tracking_uri
        env = os.environ.get("MLFLOW_TRACKING_URI") or self._dotenv_fallbacks.get("MLFLOW_TRACKING_URI")
        if env:
            return env
        return "sqlite:///" + str(self.paths.resolve("mlflow") / "mlflow.db")

    def artifact_location(self) -> str | None:
        """Artifact root for a new local experiment (None when a server decides)."""
        if self.tracking_uri().startswith("sqlite:///"):
            return (self.paths.resolve("mlflow") / "artifacts").as_uri()
        return None

    def ray_address(self) -> str | None:
        """The Ray cluster to join, or None to start a local Ray."""
        return (self.ray.address or os.environ.get("RAY_ADDRESS") or self._dotenv_fallbacks.get("RAY_ADDRESS")
                or None)

    def feature_repo_path(self) -> Path:
        """The Feast repo folder, absolute (``features.repo_path``; a relative one starts at the project folder)."""
        path = self.features.repo_path
        return path if path.is_absolute() else self.paths.base() / path

    def ray_storage_path(self) -> str:
        return self.ray.storage_path or self.paths.location("ray")

    def feast_registry(self) -> str:
        """The Feast registry's location (``features.registry``, default ``<paths.feast>/registry.db``, which is
        under the root's URI when ``paths.root`` is one and ``paths.feast`` is relative)."""
        from modelsvc.storage import is_uri, join, local_path

        where = self.features.registry
        if where is None:
            return join(self.paths.location("feast"), "registry.db")
        path = local_path(where)
        if is_uri(where) or path is None:
            return where
        return str(path) if path.is_absolute() else join(self.paths.location("root"), str(path))

    @staticmethod
    def _or_error(fn: Callable[[], str]) -> str:
        """``fn()``, or the one-line reason it cannot be resolved (``config show`` shows what is wrong)."""
        try:
            return fn()
        except ConfigError as exc:
            return _error_text(exc)

    def masked_dump(self) -> dict[str, Any]:
        """The resolved settings as plain JSON-able data, secrets masked."""
        data = self.model_dump(mode="json", exclude={"config_dir"})
        for key in ("tracking_uri", "registry_uri"):
            if data["mlflow"].get(key):
                data["mlflow"][key] = mask_uri(data["mlflow"][key])
        from modelsvc.storage import display

        for key in ("root", "datasets", "reports"):  # a URI's user info (a key) is never shown
            data["paths"][key] = display(data["paths"][key])
        if data["ray"].get("storage_path"):
            data["ray"]["storage_path"] = display(data["ray"]["storage_path"])
        if data["features"].get("registry"):
            data["features"]["registry"] = display(data["features"]["registry"])
        data["resolved"] = {
            "root": display(self.paths.location("root")),
            "warehouse": display(self.paths.location("warehouse")),
            "datasets": display(self.paths.location("datasets")),
            "reports": display(self.paths.location("reports")),
            "state": self._or_error(lambda: str(self.paths.resolve("state"))),
            "mlflow_tracking_uri": mask_uri(self._or_error(self.tracking_uri)),
            "ray_address": self.ray_address() or "local",
            "ray_storage_path": display(self.ray_storage_path()),
            "feast_registry": display(self.feast_registry()),
        }
        return data


def _error_text(exc: ConfigError) -> str:
    return f"(not usable: {exc})"


def mask_uri(uri: str) -> str:
    """Hide a password embedded in a URI (``scheme://user:secret@host``)."""
    import re

    return re.sub(r"(://[^:/@]+:)[^@]+@", r"\1**********@", uri)


# -- loading ---------------------------------------------------------------------------------------------------

YAML_ORDER = ("base.yaml", "model_params.yaml")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: is not UTF-8 text (byte {exc.start})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings at the top level, got {type(data).__name__}")
    return data


def config_files(config_dir: Path, profile: str | None) -> list[Path]:
    """The YAML files read for ``config_dir`` and ``profile``, lowest priority first."""
    files = [config_dir / name for name in YAML_ORDER if (config_dir / name).is_file()]
    files += sorted(p for p in config_dir.glob("*.yaml") if p.name not in YAML_ORDER)
    if profile:
        prof = config_dir / "profiles" / f"{profile}.yaml"
        if not prof.is_file():
            available = sorted(p.stem for p in (config_dir / "profiles").glob("*.yaml"))
            raise ConfigError(
                f"profile '{profile}' not found: no {prof}"
                + (f" (available: {', '.join(available)})" if available else "")
            )
        files.append(prof)
    return files


def load_settings(config_dir: str | Path | None = "configs", *, profile: str | None = None,
                  **overrides: Any) -> Settings:
    """Load and validate the settings tree.

    ``config_dir`` may be None (defaults and environment only). ``overrides`` are nested dicts or values that
    win over everything else, e.g. ``load_settings("configs", training={"epochs": 1})``.
    Raises :class:`ConfigError` naming the source, the field and the allowed values.
    """
    from pydantic_settings import DotEnvSettingsSource

    dotenv = DotEnvSettingsSource(Settings)  # .env is read once, here
    dotenv_vars = {k.upper(): v for k, v in dotenv.env_vars.items() if v}
    cdir: Path | None = None
    files: list[Path] = []
    if config_dir is not None:
        cdir = Path(config_dir)
        if cdir.exists() and not cdir.is_dir():
            raise ConfigError(f"config directory '{cdir}' is a file, not a directory (pass --config DIR)")
        if not cdir.is_dir():
            raise ConfigError(f"config directory '{cdir}' does not exist (pass --config DIR)")
        profile = profile or os.environ.get(ENV_PREFIX + "PROFILE") or dotenv_vars.get(ENV_PREFIX + "PROFILE")
        files = config_files(cdir, profile)
    if profile:
        overrides = {"profile": profile, **overrides}
    load = _Load(files, dotenv)
    for name, path in load.env_names.items():  # a mistyped MODELSVC_ variable would else be ignored
        if path[0] not in Settings.model_fields:
            raise ConfigError(f"environment {name}: unknown key '{'.'.join(path)}' "
                              f"(allowed: {', '.join(_allowed_keys(()))})")
    token = _LOAD.set(load)
    try:
        settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]  # .env: load.dotenv, read once
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, load.origin)) from None
    finally:
        _LOAD.reset(token)
    settings.config_dir = cdir
    if cdir is not None:  # relative paths start at the project folder, wherever the command runs
        settings.paths._base = cdir.resolve().parent
    settings._dotenv_fallbacks = {k: v for k, v in dotenv_vars.items() if k in STANDARD_DOTENV}
    _check_paths(settings, load.origin)
    return settings


STANDARD_DOTENV = ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")
DOTENV = ".env"


class _Load:
    """What one load_settings call reads: the YAML files (lowest priority first), the .env source, the names of
    the MODELSVC_ variables, and ``origin``: the source of each setting path, filled as the sources run."""

    def __init__(self, yaml_files: list[Path], dotenv: PydanticBaseSettingsSource) -> None:
        self.yaml_files = yaml_files
        self.dotenv = dotenv
        self.env_names = _setting_names(os.environ)
        self.dotenv_names = _setting_names({k.upper(): v for k, v in getattr(dotenv, "env_vars", {}).items()})
        self.origin: dict[tuple[str, ...], str] = {}


_LOAD: ContextVar[_Load | None] = ContextVar("modelsvc_settings_load", default=None)


def _setting_names(variables: Mapping[str, str | None]) -> dict[str, tuple[str, ...]]:
    """MODELSVC_ variable name → the setting path it sets, lower-cased as pydantic-settings reads it."""
    out = {}
    for name in variables:
        rest = name[len(ENV_PREFIX):].lower() if name.upper().startswith(ENV_PREFIX) else None
        if rest and rest not in {"profile", "config_dir"}:
            out[name] = tuple(rest.split("__"))
    return out


def _variable(names: Mapping[str, tuple[str, ...]], path: tuple[str, ...]) -> str:
    """The variable that set ``path``: the one naming it or the section holding it (``MODELSVC_HIVE='{…}'``)."""
    lowered = tuple(p.lower() for p in path)
    for n in range(len(lowered), 0, -1):
        for name, var_path in names.items():
            if var_path == lowered[:n]:
                return name
    return ENV_PREFIX + "__".join(lowered).upper()


def _constant(text: str) -> Callable[[tuple[str, ...]], str]:
    return lambda path: text


class _Tracked(PydanticBaseSettingsSource):
    """A source as it is, recording the origin of every value it gives (sources run highest priority first, so
    the first to give a path is the one that wins)."""

    def __init__(self, inner: PydanticBaseSettingsSource, load: _Load,
                 describe: Callable[[tuple[str, ...]], str]) -> None:
        super().__init__(inner.settings_cls)
        self.inner, self.load, self.describe = inner, load, describe

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        from pydantic_settings import SettingsError

        try:
            data = self.inner()
        except SettingsError as exc:  # a value that does not parse (e.g. bad JSON for a section)
            import re

            field = re.search(r'field "([^"]+)"', str(exc))
            path = (field.group(1),) if field else ()
            cause = exc.__cause__ or exc
            raise ConfigError(f"{self.describe(path)}: {'.'.join(path) or 'value'}: cannot be parsed "
                              f"({str(cause).splitlines()[0] if str(cause) else type(cause).__name__})") from None
        self._record(data, ())
        return data

    def _record(self, data: Mapping[str, Any], prefix: tuple[str, ...]) -> None:
        for key, value in data.items():
            path = (*prefix, str(key))
            self.load.origin.setdefault(path, self.describe(path))
            if isinstance(value, Mapping):
                self._record(value, path)


class _YamlFile(YamlConfigSettingsSource):
    """One YAML file of the config directory, read with errors that name it; secrets are refused."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path) -> None:
        super().__init__(settings_cls, yaml_file=path, yaml_file_encoding="utf-8")

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        data = _read_yaml(Path(file_path))
        for secret in _secret_paths(Settings):
            node: Any = data
            for key in secret:
                node = node.get(key) if isinstance(node, Mapping) else None
            if node is not None:
                raise ConfigError(f"{file_path}: {'.'.join(secret)}: secrets are not read from YAML; set "
                                  f"{ENV_PREFIX}{'__'.join(secret).upper()} in the environment or .env")
        return data


def _secret_paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _secret_paths(annotation, (*prefix, name))
        elif SecretStr in getattr(annotation, "__args__", ()) or annotation is SecretStr:
            out.append((*prefix, name))
    return out


def _check_paths(settings: Settings, origin: Mapping[tuple[str, ...], str]) -> None:
    """Every local folder of ``paths`` is a folder or not there yet (created on demand), never a file (a URI is
    checked when it is used: an object store needs no folder)."""
    from modelsvc.storage import local_path

    for name in PathsSettings.model_fields:
        path = local_path(settings.paths.location(name))
        if path is not None and path.exists() and not path.is_dir():
            source = _source_of(("paths", name), origin)
            raise ConfigError(f"{source}: paths.{name}: '{path}' is a file, not a folder")


def _format_validation_error(exc: ValidationError, origin: Mapping[tuple[str, ...], str]) -> str:
    msgs = []
    for err in exc.errors(include_url=False):
        loc = tuple(str(p) for p in err["loc"])
        field = ".".join(loc) or "(root)"
        source = _source_of(loc, origin)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1])
            text = f"unknown key '{field}'" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        else:
            text = f"{field}: {err['msg']}"
            if ("input" in err and err["type"] not in {"missing"} and not _is_secret(loc)
                    and not isinstance(err["input"], (dict, list))):  # a section may hold a secret
                text += f" (got {err['input']!r})"
        msgs.append(f"{source}: {text}")
    return "; ".join(msgs)


def _is_secret(loc: tuple[str, ...]) -> bool:
    return any(part in {"password", "token", "secret"} for part in loc)


def _source_of(loc: tuple[str, ...], origin: Mapping[tuple[str, ...], str]) -> str:
    lowered = tuple(p.lower() for p in loc)
    for n in range(len(loc), 0, -1):
        for key in (loc[:n], lowered[:n]):
            if key in origin:
                return origin[key]
    return "defaults"


def _allowed_keys(loc: tuple[str, ...]) -> list[str]:
    model: Any = Settings
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not isinstance(field.annotation, type) or not issubclass(field.annotation, BaseModel):
            return []
        model = field.annotation
    return sorted(k for k in model.model_fields if k != "config_dir")
