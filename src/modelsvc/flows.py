"""Prefect flows (extra ``prefect``): the pipeline's steps as Prefect tasks, the one home of prefect imports.

- ``features_flow(start_date, end_date)``: etl, then materialize (daily, after the day's raw data landed);
- ``training_flow(start_date, end_date, promote=True)``: build-dataset, train, evaluate, then promote when the gate
  passes (weekly).

Each task calls the library function the CLI calls, with the settings of ``load_settings`` (the flow parameters
``config_dir``/``profile``, else ``MODELSVC_CONFIG_DIR``/``MODELSVC_PROFILE``, else ``./configs``), and returns its
result model. Only failures a retry can fix are retried: exit 69 (a service unavailable) and 75 (retry later),
``prefect.retries`` times, waiting ``prefect.retry_delay_s`` doubled each time. Bad data (65), bad config (78) and a
refused gate (1) fail at once. A step whose inputs did not change (the raw partitions' files, the settings that
shape it, the upstream result) is served from the cache (task state ``Cached``); results live under
``<paths.root>/prefect``.

Deploy with ``prefect deploy --all`` (prefect.yaml) and a process worker, or serve both in one process:
``python -m modelsvc.flows serve``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterable
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE, CacheKeyFnPolicy
from prefect.context import TaskRunContext

from modelsvc import __version__
from modelsvc.config import Settings, load_settings
from modelsvc.errors import MissingDependencyError, ModelsvcError, RetryableError, ServiceUnavailableError
from modelsvc.timeutil import date_range, day_start

if TYPE_CHECKING:
    from prefect.client.schemas.objects import TaskRun
    from prefect.states import State

    from modelsvc.dataset import DatasetManifest
    from modelsvc.etl import EtlReport
    from modelsvc.evaluation import EvalReport
    from modelsvc.features import MaterializeReport
    from modelsvc.registry import Promotion
    from modelsvc.training.result import TrainResult

FEATURES_CRON = "30 6 * * *"  # daily, 06:30 UTC: yesterday's raw partition has landed
TRAINING_CRON = "0 8 * * 1"  # weekly, Monday 08:00 UTC, after that day's features run
TRAINING_DAYS = 28  # the training window when no start date is given: the 28 days up to yesterday
RETRYABLE_EXIT_CODES = frozenset({ServiceUnavailableError.exit_code, RetryableError.exit_code})  # 69, 75


# -- retries and cache keys ------------------------------------------------------------------------------------

def retryable(task: Any, task_run: TaskRun, state: State) -> bool:
    """Prefect's ``retry_condition_fn``: retry a ModelsvcError with exit 69 or 75, nothing else (a missing extra
    also exits 69, but no retry installs it)."""
    exc: Any = state.data
    if not isinstance(exc, BaseException):
        exc = state.result(raise_on_failure=False)
    return (isinstance(exc, ModelsvcError) and exc.exit_code in RETRYABLE_EXIT_CODES
            and not isinstance(exc, MissingDependencyError))


def retry_delays(settings: Settings) -> list[float]:
    """``prefect.retry_delay_s``, doubled for each next retry."""
    return [settings.prefect.retry_delay_s * 2**i for i in range(settings.prefect.retries)]


def _digest(step: str, *parts: Any) -> str:
    text = json.dumps([__version__, step, *parts], sort_keys=True, default=str)
    return f"modelsvc-{step}-{hashlib.sha256(text.encode()).hexdigest()[:32]}"


def _sections(settings: Settings, *names: str) -> dict[str, Any]:
    """The settings sections that shape a step (secrets masked: a changed password changes no result)."""
    return {name: getattr(settings, name).model_dump(mode="json") for name in names}


def partition_files(settings: Settings, table: str, start: date, end: date) -> list[tuple[str, int, int]] | None:
    """The identity of a local table's partitions in [start, end]: each data file's path, size and mtime.
    None for Hive (no cheap identity: the step is not cached)."""
    if settings.warehouse.engine != "duckdb":
        return None
    from modelsvc.warehouse.local import LocalWarehouse

    wh = LocalWarehouse(settings)
    out = []
    for day in wh.partitions(table):
        if start <= day <= end:
            for f in wh.files(table, day):
                st = f.stat()
                out.append((str(f.relative_to(wh.root)), st.st_size, st.st_mtime_ns))
    return out


def _feature_repo(settings: Settings) -> str:
    """Hash of the Feast definitions (what materialize and the point-in-time join read besides the tables)."""
    h = hashlib.sha256()
    repo = settings.feature_repo_path()
    for f in sorted(repo.glob("*.py")) if repo.is_dir() else []:
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


def _etl_key(ctx: TaskRunContext, p: dict[str, Any]) -> str | None:
    s: Settings = p["settings"]
    raw_start = p["start_date"] - timedelta(days=s.etl.lookback_days - 1)  # the lookback window is read too
    raw = partition_files(s, s.tables.raw_events, raw_start, p["end_date"])
    if raw is None:
        return None
    return _digest("etl", s.paths.location("warehouse"), p["start_date"], p["end_date"], raw,
                   _sections(s, "tables", "warehouse", "etl"))


def _feature_tables(s: Settings, start: date, end: date) -> list[Any] | None:
    files = [partition_files(s, t, start, end) for t in (s.tables.user_features, s.tables.realtime_features)]
    return None if any(f is None for f in files) else files


def _materialize_key(ctx: TaskRunContext, p: dict[str, Any]) -> str | None:
    s: Settings = p["settings"]
    end = p["end"].date()
    tables = _feature_tables(s, end - timedelta(days=s.features.offline_ttl_days + 1), end)
    if tables is None:
        return None
    return _digest("materialize", s.paths.location("feast"), p["end"], p["etl"].model_dump(mode="json"), tables,
                   _feature_repo(s), _sections(s, "tables", "features"))


def _dataset_key(ctx: TaskRunContext, p: dict[str, Any]) -> str | None:
    s: Settings = p["settings"]
    start, end = p["start_date"], p["end_date"]
    raw = partition_files(s, s.tables.raw_events, start, end)
    tables = _feature_tables(s, start - timedelta(days=s.features.offline_ttl_days + 1), end)
    if raw is None or tables is None:
        return None
    return _digest("build-dataset", s.paths.location("datasets"), start, end, raw, tables, _feature_repo(s),
                   _sections(s, "tables", "warehouse", "features", "dataset"))


def _train_key(ctx: TaskRunContext, p: dict[str, Any]) -> str | None:
    s: Settings = p["settings"]
    m: DatasetManifest = p["dataset"]
    return _digest("train", s.tracking_uri(), m.name, m.version, m.fingerprint,
                   _sections(s, "training", "model", "scaling"), s.mlflow.experiment)


# -- tasks: one library call each -------------------------------------------------------------------------------

class _LogReporter:
    """The library's progress Reporter, logging to the task run's Prefect logger."""

    def __init__(self) -> None:
        self.logger = get_run_logger()

    def task(self, description: str, total: float | None = None) -> Any:
        from modelsvc.progress import NULL

        return NULL.task(description, total)

    def log(self, message: str) -> None:
        import re

        self.logger.info(re.sub(r"\[/?[a-z ]+\]", "", message))  # rich markup off


@task(name="etl", cache_policy=CacheKeyFnPolicy(cache_key_fn=_etl_key), retry_condition_fn=retryable)
def etl_task(settings: Settings, start_date: date, end_date: date) -> EtlReport:
    from modelsvc.etl import run_etl

    return run_etl(settings, start_date=start_date, end_date=end_date, reporter=_LogReporter())


@task(name="materialize", cache_policy=CacheKeyFnPolicy(cache_key_fn=_materialize_key), retry_condition_fn=retryable)
def materialize_task(settings: Settings, end: Any, etl: EtlReport) -> MaterializeReport:
    from modelsvc.features import materialize

    return materialize(settings, end=end, reporter=_LogReporter())


@task(name="build-dataset", cache_policy=CacheKeyFnPolicy(cache_key_fn=_dataset_key), retry_condition_fn=retryable)
def build_dataset_task(settings: Settings, start_date: date, end_date: date) -> DatasetManifest:
    from modelsvc.dataset import build_dataset

    return build_dataset(settings, start_date=start_date, end_date=end_date, reporter=_LogReporter())


@task(name="train", cache_policy=CacheKeyFnPolicy(cache_key_fn=_train_key), retry_condition_fn=retryable)
def train_task(settings: Settings, dataset: DatasetManifest) -> TrainResult:
    from modelsvc.training import train

    return train(settings, dataset=dataset.name, version=dataset.version, reporter=_LogReporter())


# evaluate and promote read the registry's current production version: never cached
@task(name="evaluate", cache_policy=NO_CACHE, retry_condition_fn=retryable)
def evaluate_task(settings: Settings, trained: TrainResult) -> EvalReport:
    """Evaluate, publish the report as an artifact, then fail (GateRefusedError, exit 1) when the gate refused."""
    from modelsvc.evaluation import evaluate

    report = evaluate(settings, run_id=trained.run_id, reporter=_LogReporter())
    create_markdown_artifact(evaluation_markdown(report), key="modelsvc-evaluation",
                             description=f"evaluation of run {report.run_id}: {report.verdict}")
    report.raise_if_refused()
    return report


@task(name="promote", cache_policy=NO_CACHE, retry_condition_fn=retryable)
def promote_task(settings: Settings, report: EvalReport) -> Promotion:
    from modelsvc.registry import promote

    return promote(settings, run_id=report.run_id)


# -- flows ------------------------------------------------------------------------------------------------------

def _settings(config_dir: str | None, profile: str | None) -> Settings:
    return load_settings(config_dir or os.environ.get("MODELSVC_CONFIG_DIR") or "configs", profile=profile)


def _configured(settings: Settings, t: Any) -> Any:
    """The task with the retries, backoff and cache storage of the settings."""
    options: dict[str, Any] = {"retries": settings.prefect.retries, "retry_delay_seconds": retry_delays(settings)}
    if t.cache_policy not in (None, NO_CACHE):
        if settings.prefect.cache:
            options["result_storage"] = settings.paths.resolve("state") / "prefect"
        else:
            options["cache_policy"] = NO_CACHE
    return t.with_options(**options)


class _Steps:
    """Runs the flow's tasks in order, notes each one's state for the run summary (a markdown artifact)."""

    def __init__(self, settings: Settings, flow_name: str, days: list[date]) -> None:
        self.settings, self.flow_name, self.days = settings, flow_name, days
        self.rows: list[tuple[str, str, str]] = []

    def __call__(self, t: Any, **kwargs: Any) -> Any:
        state = _configured(self.settings, t)(settings=self.settings, return_state=True, **kwargs)
        if not state.is_completed():
            exc = state.result(raise_on_failure=False)
            self.rows.append((t.name, state.name or str(state.type), str(exc)))
            self.summary()
            state.result()  # raises the task's error: the flow fails with it
        result = state.result()
        self.rows.append((t.name, state.name or "Completed", _brief(result)))
        return result

    def summary(self) -> None:
        create_markdown_artifact(summary_markdown(self.flow_name, self.days, self.rows),
                                 key=f"modelsvc-{self.flow_name}-summary",
                                 description=f"{self.flow_name} {self.days[0]}..{self.days[-1]}")


def _brief(result: Any) -> str:
    """One line per step for the summary table."""
    fields = ("days", "raw_events_read", "rows_written", "rows", "version", "fingerprint", "run_id", "epochs_run",
              "verdict", "changed")
    data = result.model_dump(mode="json") if hasattr(result, "model_dump") else {}
    return ", ".join(f"{k}={data[k]}" for k in fields if k in data)


@flow(name="features", description="etl, then materialize, for a range of days (default: yesterday UTC)")
def features_flow(start_date: date | None = None, end_date: date | None = None, config_dir: str | None = None,
                  profile: str | None = None) -> dict[str, Any]:
    settings = _settings(config_dir, profile)
    days = date_range(start_date, end_date)
    step = _Steps(settings, "features", days)
    etl = step(etl_task, start_date=days[0], end_date=days[-1])
    mat = step(materialize_task, end=day_start(days[-1] + timedelta(days=1)), etl=etl)
    step.summary()
    return {"etl": etl, "materialize": mat}


@flow(name="training", description="build-dataset, train, evaluate, then promote when the gate passes")
def training_flow(start_date: date | None = None, end_date: date | None = None, promote: bool = True,
                  days: int = TRAINING_DAYS, config_dir: str | None = None,
                  profile: str | None = None) -> dict[str, Any]:
    settings = _settings(config_dir, profile)
    end = date_range(end_date, end_date)[-1]  # default: yesterday UTC
    window = date_range(start_date or end - timedelta(days=days - 1), end)
    step = _Steps(settings, "training", window)
    manifest = step(build_dataset_task, start_date=window[0], end_date=window[-1])
    trained = step(train_task, dataset=manifest)
    report = step(evaluate_task, trained=trained)
    out: dict[str, Any] = {"dataset": manifest, "train": trained, "evaluate": report}
    if promote:
        out["promote"] = step(promote_task, report=report)
    step.summary()
    return out


# -- artifacts --------------------------------------------------------------------------------------------------

def _table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def summary_markdown(flow_name: str, days: list[date], rows: list[tuple[str, str, str]]) -> str:
    return f"## modelsvc {flow_name}: {days[0]} .. {days[-1]}\n\n" + _table(("step", "state", "result"), rows)


def evaluation_markdown(report: EvalReport) -> str:
    prod = report.production
    metrics = [(name, _fmt(getattr(report.candidate, name)), _fmt(getattr(prod, name)) if prod else "")
               for name in ("auc", "log_loss", "brier", "calibration_error")]
    checks = [(c.name, "pass" if c.passed else "FAIL", c.detail) for c in report.gate.checks]
    return (f"## Evaluation of run {report.run_id}: {report.verdict}\n\n"
            f"dataset {report.dataset} {report.dataset_version}, {report.split} split, {report.rows} rows; "
            f"production version {report.production_version or 'none'}\n\n"
            + _table(("metric", "candidate", "production"), metrics) + "\n\n"
            + _table(("gate check", "result", "detail"), checks) + "\n")


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))


# -- serving: one process that schedules and runs both flows ------------------------------------------------------

def deployments(config_dir: str | Path | None = None) -> list[Any]:
    """The two deployments of prefect.yaml, for ``prefect.serve``."""
    params = {"config_dir": str(config_dir)} if config_dir else {}
    return [features_flow.to_deployment(name="features-daily", cron=FEATURES_CRON, parameters=params),
            training_flow.to_deployment(name="training-weekly", cron=TRAINING_CRON, parameters=params)]


def serve(config_dir: str | Path | None = None, *, limit: int | None = 1) -> None:
    """Serve both deployments on their schedules until interrupted (runs them one at a time by default)."""
    from prefect import serve as prefect_serve

    prefect_serve(*deployments(config_dir), limit=limit)


def main(argv: list[str] | None = None, out: Callable[[str], Any] = sys.stderr.write) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] != ["serve"] or len(args) > 2:
        out("usage: python -m modelsvc.flows serve [CONFIG_DIR]\n")
        return 64
    serve(args[1] if len(args) > 1 else None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
