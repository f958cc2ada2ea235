"""``modelsvc run``: etl → materialize → build-dataset → train → evaluate → promote, one summary at the end.

Incremental: a step whose inputs did not change since its last success is skipped, and says why
(:mod:`modelsvc.incremental`); ``--force STEP`` redoes it; ``--plan`` only says what would run. One pipeline at a
time per data root (:mod:`modelsvc.runlock`); each run is recorded in the run history (:mod:`modelsvc.history`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.errors import GateRefusedError, ModelsvcError, UsageError, from_os_error
from modelsvc.progress import NULL, Reporter
from modelsvc.timeutil import date_range, day_start

StepName = Literal["etl", "materialize", "build-dataset", "train", "evaluate", "promote"]
STEPS: tuple[StepName, ...] = ("etl", "materialize", "build-dataset", "train", "evaluate", "promote")


class StepResult(BaseModel):
    step: StepName
    status: Literal["ok", "failed", "skipped", "refused", "interrupted", "planned"]
    seconds: float = 0.0
    summary: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
    exit_code: int = 0
    reason: str | None = Field(None, description="why the step was skipped, or (--plan) why it would run")


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
    started_at: datetime | None = None
    plan: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

def run_pipeline(settings: Settings, *, start_date: str | date | None, end_date: str | date | None,
                 skip_etl: bool = False, reporter: Reporter = NULL, plan: bool = False,
                 force: Sequence[str] = ()) -> PipelineReport:
    """Run every step in order; stop at the first failure and name it. Never raises ModelsvcError for a step
    failure: the report carries the failed step and its exit code (the CLI turns that into the exit status).

    ``plan``: decide each step (run or skip, and why) and change nothing. ``force``: steps to redo even when
    their inputs did not change ("all" for every step)."""
    days = date_range(start_date, end_date)  # bad dates fail before anything runs
    forced = _forced(force)
    if plan:
        planned = _Pipeline(settings, days, skip_etl, reporter, forced, plan=True)
        try:
            return planned.execute()
        finally:
            planned.close()
    from modelsvc.runlock import data_root_lock

    what = f"modelsvc run {days[0]}..{days[-1]}"
    with data_root_lock(settings, what):
        pipeline = _Pipeline(settings, days, skip_etl, reporter, forced, plan=False)
        try:
            report = pipeline.execute()
        except BaseException:
            pipeline.record(interrupted=True)
            raise
        finally:
            pipeline.close()
        pipeline.record()
        return report


def _forced(force: Sequence[str]) -> set[str]:
    names = {f.strip() for item in force for f in item.split(",") if f.strip()}
    if "all" in names:
        return set(STEPS)
    unknown = sorted(names - set(STEPS))
    if unknown:
        raise UsageError(f"--force {', '.join(unknown)}: not a step (one of: all, {', '.join(STEPS)})")
    return names


class _Pipeline:
    """One run: decides, runs and records each step."""

    def __init__(self, settings: Settings, days: list[date], skip_etl: bool, reporter: Reporter,
                 forced: set[str], *, plan: bool) -> None:
        from modelsvc import incremental

        self.settings, self.days, self.skip_etl, self.reporter = settings, days, skip_etl, reporter
        self.forced, self.plan = forced, plan
        self.started = datetime.now(timezone.utc)
        self.t0 = time.perf_counter()
        self.steps: list[StepResult] = []
        self.ctx: dict[str, Any] = {}
        self.state = incremental.load_state(settings)
        self.fps = incremental.etl_fingerprints(settings, days)
        self.report: PipelineReport | None = None
        self._tracker: Any = None

    def tracker(self) -> Any:
        """The MLflow side of this run (:mod:`modelsvc.training.tracker`), started with the run: a child process
        that imports MLflow (and opens, or creates, the store) while the ETL and Feast steps run here; train logs
        through it, and evaluate and promote run in it, where MLflow and the model's modules are imported already.
        This process then never imports MLflow (about 2 s)."""
        if self._tracker is None:
            from modelsvc.training.tracker import start_tracker

            self._tracker = start_tracker(self.settings)
        return self._tracker

    def close(self) -> None:
        if self._tracker is not None:
            self._tracker.close()
            self._tracker = None

    # -- decisions: (skip?, reason) ----------------------------------------------------------------------------
    def _decide_etl(self) -> tuple[bool, str]:
        from modelsvc import incremental

        if self.skip_etl:
            return True, "--skip-etl"
        if "etl" in self.forced:
            return False, "--force etl"
        done = self.state.get("etl", {})
        todo = [d for d in self.days
                if self.fps[d.isoformat()] is None or done.get(d.isoformat()) != self.fps[d.isoformat()]
                or not incremental.etl_output_exists(self.settings, d)]
        self.ctx["etl_days"] = todo
        if not todo:
            return True, f"inputs of all {len(self.days)} days unchanged since their last ETL"
        if len(todo) == len(self.days):
            return False, "no earlier ETL of these inputs" if not done else "inputs changed"
        return False, f"{len(todo)} of {len(self.days)} days new or changed: {todo[0]}..{todo[-1]}"

    def _range_key(self, *sections: str, **extra: Any) -> str | None:
        from modelsvc import incremental

        return incremental.range_fingerprint(self.settings, self.fps, *sections, start=self.days[0],
                                             end=self.days[-1], **extra)

    def _decide_materialize(self) -> tuple[bool, str]:
        if "materialize" in self.forced:
            return False, "--force materialize"
        if self.ctx.get("etl_ran"):
            return False, "the feature tables changed"
        key = self._range_key("features")
        if key is not None and self.state.get("materialize") == key:
            return True, "feature tables unchanged since the last materialize"
        return False, "no earlier materialize of these feature tables"

    def _decide_build(self) -> tuple[bool, str]:
        if "build-dataset" in self.forced:
            return False, "--force build-dataset"
        key = self._range_key("dataset", "features")
        found = self.state.get("datasets", {}).get(key) if key else None
        if found and not self.ctx.get("etl_ran"):
            from modelsvc.dataset import load_dataset

            try:
                self.ctx["dataset"] = load_dataset(self.settings, found["name"], found["version"])
            except ModelsvcError:
                return False, f"dataset version {found['version']} is gone"
            return True, f"same inputs as dataset {found['name']}/{found['version']}: reused"
        return False, "new inputs" if not self.ctx.get("etl_ran") else "the feature tables changed"

    def _decide_train(self) -> tuple[bool, str]:
        if "train" in self.forced:
            return False, "--force train"
        manifest = self.ctx.get("dataset")
        if manifest is None:
            return False, "a new dataset version"
        from modelsvc.training.run_log import RunState
        from modelsvc.training.trainer import run_name_for

        name = run_name_for(self.settings, manifest)
        stored = RunState(self.settings.ray_storage_path(), name).read()
        if stored.get("result"):
            from modelsvc.training.result import TrainResult

            self.ctx["train"] = TrainResult.model_validate(stored["result"])
            return True, f"training {name} already finished (same dataset and training settings)"
        return False, f"no finished training {name}"

    def _decide_promotion(self, step: str) -> tuple[bool, str]:
        if step in self.forced:
            return False, f"--force {step}"
        result = self.ctx.get("train")
        if result is None:
            return False, "a new training"
        promoted = self.state.get("promoted", {}).get(result.run_id)
        if promoted:  # no MLflow round trip; and a later rollback by a person is not undone by unchanged data
            return True, f"run {result.run_id} was promoted (version {promoted}) by an earlier run"
        if "production_run_id" not in self.ctx:
            self.ctx["production_run_id"] = self.tracker().run("modelsvc.registry:production_run_id")
        if self.ctx["production_run_id"] == result.run_id:
            return True, f"run {result.run_id} is already in production"
        return False, "the training is not in production"

    # -- actions -----------------------------------------------------------------------------------------------
    def _etl(self) -> dict[str, Any]:
        from modelsvc.etl import run_etl

        todo = self.ctx.get("etl_days") or self.days
        if "etl" in self.forced or self.skip_etl:
            todo = self.days
        r = run_etl(self.settings, start_date=todo[0], end_date=todo[-1], reporter=self.reporter)
        self.ctx["etl_ran"] = True
        etl_state = self.state.setdefault("etl", {})
        for d in date_range(todo[0], todo[-1]):
            if self.fps.get(d.isoformat()):
                etl_state[d.isoformat()] = self.fps[d.isoformat()]
        return {"days": r.days, "engine": r.engine, "raw_events_read": r.raw_events_read, **r.rows_written}

    def _materialize(self) -> dict[str, Any]:
        from modelsvc.features import materialize as do_materialize

        end = day_start(self.days[-1] + timedelta(days=1))  # everything known up to the end of the last ETL day
        r = do_materialize(self.settings, end=end, reporter=self.reporter)
        self.state["materialize"] = self._range_key("features")
        return {"online_store": r.online_store, "rows": r.rows, "end": r.end.isoformat()}

    def _build(self) -> dict[str, Any]:
        from modelsvc.dataset import build_dataset

        manifest = build_dataset(self.settings, start_date=self.days[0], end_date=self.days[-1],
                                 reporter=self.reporter)
        self.ctx["dataset"] = manifest
        key = self._range_key("dataset", "features")
        if key:
            self.state.setdefault("datasets", {})[key] = {"name": manifest.name, "version": manifest.version}
        return _dataset_summary(manifest)

    def _train(self) -> dict[str, Any]:
        from modelsvc.training import train as do_train

        manifest = self.ctx["dataset"]
        result = do_train(self.settings, dataset=manifest.name, version=manifest.version, reporter=self.reporter,
                          tracker=self.tracker())
        self.ctx["train"] = result
        return _train_summary(result)

    def _evaluate(self) -> dict[str, Any]:
        report = self.tracker().run("modelsvc.evaluation:evaluate", self.reporter, run_id=self.ctx["train"].run_id)
        self.ctx["eval"] = report
        report.raise_if_refused()
        return _eval_summary(report)

    def _promote(self) -> dict[str, Any]:
        promotion = self.tracker().run("modelsvc.registry:promote", run_id=self.ctx["train"].run_id)
        self.ctx["promoted_version"] = promotion.version
        self.state.setdefault("promoted", {})[self.ctx["train"].run_id] = promotion.version
        return {"version": promotion.version, "previous_version": promotion.previous_version,
                "alias": promotion.alias, "changed": promotion.changed}

    # -- the run -----------------------------------------------------------------------------------------------
    def execute(self) -> PipelineReport:
        steps: dict[StepName, tuple[Callable[[], tuple[bool, str]], Callable[[], dict[str, Any]]]] = {
            "etl": (self._decide_etl, self._etl),
            "materialize": (self._decide_materialize, self._materialize),
            "build-dataset": (self._decide_build, self._build),
            "train": (self._decide_train, self._train),
            "evaluate": (lambda: self._decide_promotion("evaluate"), self._evaluate),
            "promote": (lambda: self._decide_promotion("promote"), self._promote),
        }
        failed: StepResult | None = None
        if not self.plan:
            self.tracker()  # MLflow imported by the child while the first steps run here
        for name in STEPS:
            if failed is not None:
                self.steps.append(StepResult(step=name, status="skipped", reason=f"'{failed.step}' {failed.status}"))
                continue
            decide, action = steps[name]
            s0 = time.perf_counter()
            try:
                skip, reason = decide()
                if skip:
                    self.steps.append(StepResult(step=name, status="skipped", reason=reason,
                                                 seconds=time.perf_counter() - s0, summary=self._reused(name)))
                    continue
                if self.plan:
                    self.steps.append(StepResult(step=name, status="planned", reason=reason))
                    self.ctx.setdefault("etl_ran", name == "etl")  # later steps see new feature tables
                    continue
                self.reporter.log(f"[bold]▶ {name}[/bold] ({reason})")
                summary = action()
                self.steps.append(StepResult(step=name, status="ok", seconds=time.perf_counter() - s0,
                                             summary=summary, reason=reason))
                self._save_state()
            except BaseException as exc:
                error = exc if isinstance(exc, ModelsvcError) else from_os_error(exc)
                if error is None:
                    self.steps.append(StepResult(step=name, status="interrupted" if isinstance(
                        exc, KeyboardInterrupt) else "failed", seconds=time.perf_counter() - s0,
                        error=str(exc) or type(exc).__name__, exit_code=130 if isinstance(
                            exc, KeyboardInterrupt) else 70))
                    raise
                status: Literal["failed", "refused"] = "refused" if isinstance(error, GateRefusedError) else "failed"
                failed = StepResult(step=name, status=status, seconds=time.perf_counter() - s0,
                                    error=error.message, exit_code=error.exit_code,
                                    summary=_eval_summary(self.ctx["eval"]) if name == "evaluate"
                                    and "eval" in self.ctx else {})
                self.steps.append(failed)
        return self._finish(failed)

    def _reused(self, name: str) -> dict[str, Any]:
        if name == "build-dataset" and "dataset" in self.ctx:
            return _dataset_summary(self.ctx["dataset"])
        if name == "train" and "train" in self.ctx:
            return _train_summary(self.ctx["train"])
        return {}

    def _save_state(self) -> None:
        from modelsvc import incremental

        incremental.save_state(self.settings, self.state)

    def _finish(self, failed: StepResult | None) -> PipelineReport:
        train = self.ctx.get("train")
        dataset = self.ctx.get("dataset")
        report = PipelineReport(
            start_date=self.days[0], end_date=self.days[-1], steps=self.steps,
            run_id=train.run_id if train is not None else None,
            dataset_version=dataset.version if dataset is not None else None,
            promoted_version=self.ctx.get("promoted_version"), seconds=time.perf_counter() - self.t0,
            started_at=self.started, plan=self.plan,
        )
        if failed is not None:
            report.failed_step = failed.step
            report.exit_code = failed.exit_code
            report.message = f"step '{failed.step}' {failed.status}: {failed.error}"
        self.report = report
        return report

    def record(self, *, interrupted: bool = False) -> None:
        """Append this run to the history (also when it was interrupted or crashed)."""
        from contextlib import suppress

        from modelsvc.history import record_run

        unfinished = self.report is None
        report = self.report or self._finish(None)
        if interrupted and unfinished:
            last = self.steps[-1] if self.steps else None
            report.failed_step = last.step if last else None
            report.exit_code = last.exit_code if last else 130
            report.message = f"step '{last.step}' {last.status}" if last else "interrupted"
        with suppress(OSError):  # the history is a convenience: never turn a result into an error
            record_run(self.settings, report)


def _dataset_summary(manifest: Any) -> dict[str, Any]:
    return {"name": manifest.name, "version": manifest.version, "rows": manifest.rows,
            "label_rate": manifest.label_rate, "fingerprint": manifest.fingerprint}


def _train_summary(result: Any) -> dict[str, Any]:
    return {"run_id": result.run_id, "epochs": result.epochs_run, "device": result.device,
            **{k: result.metrics[k] for k in ("val_auc", "val_loss") if k in result.metrics}}


def _eval_summary(report: Any) -> dict[str, Any]:
    summary: dict[str, Any] = {"verdict": report.verdict, "auc": report.candidate.auc,
                               "log_loss": report.candidate.log_loss}
    if report.production is not None:
        summary["production_auc"] = report.production.auc
    if report.oracle is not None:
        summary["oracle_auc"] = report.oracle.oracle_auc
    return summary
