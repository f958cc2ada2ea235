"""``modelsvc run``: etl → materialize → build-dataset → train → evaluate → promote, one summary at the end."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.errors import GateRefusedError, ModelsvcError
from modelsvc.progress import NULL, Reporter
from modelsvc.timeutil import date_range, day_start

StepName = Literal["etl", "materialize", "build-dataset", "train", "evaluate", "promote"]
STEPS: tuple[StepName, ...] = ("etl", "materialize", "build-dataset", "train", "evaluate", "promote")


class StepResult(BaseModel):
    step: StepName
    status: Literal["ok", "failed", "skipped", "refused"]
    seconds: float = 0.0
    summary: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0


class PipelineReport(BaseModel):
    start_date: date
    end_date: date
    steps: list[StepResult]
    run_id: str | None = None
    dataset_version: str | None = None
    promoted_version: str | None = None
    seconds: float
    failed_step: StepName | None = None
    exit_code: int = 0
    message: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def run_pipeline(settings: Settings, *, start_date: str | date | None, end_date: str | date | None,
                 skip_etl: bool = False, reporter: Reporter = NULL) -> PipelineReport:
    """Run every step in order; stop at the first failure and name it. Never raises ModelsvcError for a step
    failure: the report carries the failed step and its exit code (the CLI turns that into the exit status)."""
    days = date_range(start_date, end_date)  # bad dates fail before anything runs
    t0 = time.perf_counter()
    steps: list[StepResult] = []
    state: dict[str, Any] = {}

    def etl() -> dict[str, Any]:
        from modelsvc.etl import run_etl

        r = run_etl(settings, start_date=days[0], end_date=days[-1], reporter=reporter)
        return {"days": r.days, "engine": r.engine, "raw_events_read": r.raw_events_read, **r.rows_written}

    def materialize() -> dict[str, Any]:
        from modelsvc.features import materialize as do_materialize

        # everything known up to the end of the last ETL day
        end = day_start(days[-1] + timedelta(days=1))
        r = do_materialize(settings, end=end, reporter=reporter)
        return {"online_store": r.online_store, "rows": r.rows, "end": r.end.isoformat()}

    def build() -> dict[str, Any]:
        from modelsvc.dataset import build_dataset

        manifest = build_dataset(settings, start_date=days[0], end_date=days[-1], reporter=reporter)
        state["dataset"] = manifest
        return {"name": manifest.name, "version": manifest.version, "rows": manifest.rows,
                "label_rate": manifest.label_rate, "fingerprint": manifest.fingerprint}

    def train() -> dict[str, Any]:
        from modelsvc.training import train as do_train

        manifest = state["dataset"]
        result = do_train(settings, dataset=manifest.name, version=manifest.version, reporter=reporter)
        state["run_id"] = result.run_id
        return {"run_id": result.run_id, "epochs": result.epochs_run, "device": result.device,
                **{k: result.metrics[k] for k in ("val_auc", "val_loss") if k in result.metrics}}

    def evaluate() -> dict[str, Any]:
        from modelsvc.evaluation import evaluate as do_evaluate

        report = do_evaluate(settings, run_id=state["run_id"], reporter=reporter)
        state["eval"] = report
        report.raise_if_refused()
        return _eval_summary(report)

    def promote() -> dict[str, Any]:
        from modelsvc.registry import promote as do_promote

        promotion = do_promote(settings, run_id=state["run_id"])
        state["promoted_version"] = promotion.version
        return {"version": promotion.version, "previous_version": promotion.previous_version,
                "alias": promotion.alias, "changed": promotion.changed}

    actions: dict[StepName, Callable[[], dict[str, Any]]] = {
        "etl": etl, "materialize": materialize, "build-dataset": build,
        "train": train, "evaluate": evaluate, "promote": promote,
    }
    failed: StepResult | None = None
    for name in STEPS:
        if failed is not None or (name == "etl" and skip_etl):
            steps.append(StepResult(step=name, status="skipped"))
            continue
        reporter.log(f"[bold]▶ {name}[/bold]")
        s0 = time.perf_counter()
        try:
            summary = actions[name]()
            steps.append(StepResult(step=name, status="ok", seconds=time.perf_counter() - s0, summary=summary))
        except ModelsvcError as exc:
            status: Literal["failed", "refused"] = "refused" if isinstance(exc, GateRefusedError) else "failed"
            failed = StepResult(step=name, status=status, seconds=time.perf_counter() - s0,
                                error=exc.message, exit_code=exc.exit_code,
                                summary=_eval_summary(state["eval"]) if name == "evaluate" and "eval" in state else {})
            steps.append(failed)

    report = PipelineReport(
        start_date=days[0], end_date=days[-1], steps=steps, run_id=state.get("run_id"),
        dataset_version=state["dataset"].version if "dataset" in state else None,
        promoted_version=state.get("promoted_version"), seconds=time.perf_counter() - t0,
    )
    if failed is not None:
        report.failed_step = failed.step
        report.exit_code = failed.exit_code
        report.message = f"step '{failed.step}' {failed.status}: {failed.error}"
    return report


def _eval_summary(report: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"verdict": report.verdict, "auc": report.candidate.auc,
                               "log_loss": report.candidate.log_loss}
    if report.production is not None:
        summary["production_auc"] = report.production.auc
    if report.oracle is not None:
        summary["oracle_auc"] = report.oracle.oracle_auc
    return summary
