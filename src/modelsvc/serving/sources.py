"""The one adapter between serving and the rest of modelsvc: Feast (online reads, the point-in-time join) and
MLflow (the production alias, loading a model).

Everything serving needs from ``modelsvc.features``, ``modelsvc.dataset``, ``modelsvc.tracking`` and
``modelsvc.registry`` goes through here, so a move of those modules changes this file only.

Online reads: :class:`modelsvc.features.online_read.OnlineFeatures` (Feast's online store read once per view,
stale values past the view's ttl treated as missing, as in training's point-in-time join).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from modelsvc.config import Settings
from modelsvc.errors import ModelsvcError, NotFoundError, ServiceUnavailableError
from modelsvc.features.online_read import KEY_CACHE_SIZE, OnlineFeatures, OnlineRows, ViewRead

if TYPE_CHECKING:
    import pandas as pd


# online features: Feast's side lives in modelsvc.features.online_read (re-exported: serving reaches it here)
__all__ = ["KEY_CACHE_SIZE", "ModelRef", "OnlineFeatures", "OnlineRows", "ViewRead", "get_online_features"]


def get_online_features(settings: Settings, user_ids: Sequence[int]) -> pd.DataFrame:
    """Feast's own ``FeatureStore.get_online_features`` of the feature service (the reference for the fast path)."""
    from modelsvc.features import get_online_features as feast_online

    return feast_online(settings, user_ids)


# -- the model -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ModelRef:
    """Which model: a registered version behind the alias, or a run's logged model."""

    uri: str
    version: str  # registered version, or "run:<id>"
    run_id: str | None


def production_ref(settings: Settings) -> ModelRef:
    """The version behind the production alias; NotFoundError when there is none."""
    from modelsvc.tracking import map_tracking_errors, mlflow_client, production_version

    @map_tracking_errors
    def lookup(settings: Settings) -> Any:
        return production_version(settings, mlflow_client(settings))

    mv = lookup(settings)
    name, alias = settings.mlflow.registered_model, settings.mlflow.production_alias
    if mv is None:
        raise NotFoundError(f"registered model '{name}' has no '{alias}' alias: nothing to serve "
                            f"(promote a run: modelsvc promote --run-id ID)")
    return ModelRef(f"models:/{name}/{mv.version}", str(mv.version), mv.run_id)


def run_ref(settings: Settings, run_id: str) -> ModelRef:
    """A run's logged model (``runs:/<id>/model``)."""
    from modelsvc.registry import _RUN_ID

    if not _RUN_ID.match(run_id or ""):
        from modelsvc.errors import UsageError

        raise UsageError(f"--run-id {run_id!r} is not an MLflow run id")
    return ModelRef(f"runs:/{run_id}/model", f"run:{run_id}", run_id)


def model_ref(settings: Settings, run_id: str | None = None) -> ModelRef:
    return run_ref(settings, run_id) if run_id else production_ref(settings)


def load_pyfunc(settings: Settings, ref: ModelRef, *, quiet: bool = False) -> Any:
    """``mlflow.pyfunc.load_model`` of ``ref`` (NotFoundError naming it when it cannot be loaded). ``quiet`` skips
    MLflow's dependency and Python-version checks (their warnings went to the log at the first load; scanning the
    installed packages again costs CPU that a swap under load takes from requests)."""
    from modelsvc.tracking import load_model, map_tracking_errors

    return map_tracking_errors(lambda settings: load_model(settings, ref.uri, quiet=quiet))(settings)


# -- batch scoring: the impressions and their point-in-time features --------------------------------------------

def impressions_with_features(settings: Settings, start: date, end: date, *,
                              empty_ok: bool = False) -> pd.DataFrame:
    """Impressions of [start, end] with their point-in-time features: the join of ``build-dataset``
    (``dataset.read_impressions`` then ``features.historical_features``), without the label.

    ``dataset.finish_join`` is not reused as a whole: it also splits by time (which refuses a range with a
    single instant) and refuses a join where every feature is null (a batch of unknown users is still scored).
    No impressions: DataError, or with ``empty_ok`` an empty frame (one day of a range scored on Ray).
    """
    import pandas as pd
    import pyarrow as pa

    from modelsvc.dataset import ENTITY_COLUMNS, FEATURES, _utc, read_impressions
    from modelsvc.errors import DataError
    from modelsvc.features import historical_features

    entity_df = read_impressions(settings, start, end, empty_ok=empty_ok)
    if entity_df.empty:
        return pd.DataFrame({"event_id": pd.Series(dtype="object"), "user_id": pd.Series(dtype="int64"),
                             "event_timestamp": pd.Series(dtype="datetime64[us, UTC]"),
                             **{f: pd.Series(dtype="object") for f in FEATURES}})
    joined = historical_features(settings, entity_df)
    df = joined.table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    df["event_timestamp"] = _utc(df["event_timestamp"])
    missing = [f for f in FEATURES if f not in df.columns]
    if missing:
        raise DataError(f"the point-in-time join lacks the features {', '.join(missing)}")
    df = df.sort_values(["event_timestamp", "event_id"], kind="stable", ignore_index=True)
    df["user_id"] = df["user_id"].astype("int64")
    return df[[*ENTITY_COLUMNS, *FEATURES]]


def model_features() -> list[str]:
    from modelsvc.dataset import FEATURES

    return list(FEATURES)


def write_partitions(settings: Settings, table: str, data: Any, days: Sequence[date]) -> list[date]:
    from modelsvc.warehouse import open_warehouse

    with open_warehouse(settings) as wh:
        return wh.write_partitions(table, data, days=days)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, ServiceUnavailableError)


__all__ = [
    "ModelRef",
    "ModelsvcError",
    "OnlineFeatures",
    "OnlineRows",
    "get_online_features",
    "impressions_with_features",
    "load_pyfunc",
    "model_features",
    "model_ref",
    "production_ref",
    "run_ref",
    "write_partitions",
]
