"""``modelsvc doctor``: is every backend the settings point at reachable and ready? One row per check.

The checks live with their adapters (``modelsvc.health`` says their form): the warehouse's in
``modelsvc.warehouse``, Feast's in ``modelsvc.features.health``, MLflow's in ``modelsvc.tracking``, Ray's in
``modelsvc.training.ray_runtime``. This module only runs them and builds the report: each check in its own daemon
thread with a deadline, so an unreachable host can never hang the command; a check that runs out of time is
reported as failed. Checks only read: nothing is created or migrated (an absent local SQLite store is reported,
not created).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pydantic import BaseModel, Field

from modelsvc.config import Settings, mask_uri
from modelsvc.errors import ModelsvcError, ServiceUnavailableError
from modelsvc.health import CheckOutcome, Status, one_line

DEFAULT_TIMEOUT_S = 30.0


class Check(BaseModel):
    """One row of the report. ``fix`` says what to do when the status is ``fail`` or ``warn``."""

    name: str
    status: Status
    detail: str = ""
    fix: str | None = None
    seconds: float = 0.0


class DoctorReport(BaseModel):
    engine: str
    online_store: str
    tracking_uri: str = Field(description="secrets masked")
    ray_address: str
    checks: list[Check]

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def raise_if_failed(self) -> None:
        """Raise ServiceUnavailableError (exit 69) naming the failed checks."""
        if self.failed:
            names = ", ".join(c.name for c in self.failed)
            raise ServiceUnavailableError(f"{len(self.failed)} of {len(self.checks)} checks failed: {names}")


CheckFn = Callable[[Settings, float], str]


def _specs(settings: Settings) -> list[tuple[str, CheckFn, str]]:
    """(row name, the adapter's check, the fix shown when it fails) for every check, in the table's order."""
    from modelsvc import tracking, warehouse
    from modelsvc.features import health as feast_health
    from modelsvc.training import ray_runtime

    return [
        ("warehouse.engine", warehouse.check_engine, warehouse.ENGINE_FIX[settings.warehouse.engine]),
        ("warehouse.raw_events", warehouse.check_raw_events,
         "load raw events into the table (demo: modelsvc demo-data)"),
        ("warehouse.feature_tables", warehouse.check_feature_tables,
         "run: modelsvc etl --start-date ... --end-date ..."),
        ("feast.repo", feast_health.check_repo,
         "set features.repo_path to the Feast repo (the folder with definitions.py)"),
        ("feast.registry", feast_health.check_registry,
         "run: modelsvc materialize (applies the repo, writes the registry)"),
        ("feast.online_store", feast_health.check_online, feast_health.ONLINE_FIX[settings.features.online_store]),
        ("mlflow.tracking", tracking.check_tracking, tracking.TRACKING_FIX),
        ("mlflow.registry", tracking.check_registry, tracking.REGISTRY_FIX),
        ("ray", ray_runtime.check, ray_runtime.RAY_FIX),
    ]


def check_all(settings: Settings, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> DoctorReport:
    """Run every check concurrently, each limited to ``timeout_s`` seconds; never raises for a failed check."""
    started = time.monotonic()
    runners = [_Runner(name, fn, settings, timeout_s, fix) for name, fn, fix in _specs(settings)]
    for r in runners:
        r.start()
    checks = [r.result(deadline=started + timeout_s) for r in runners]
    return DoctorReport(
        engine=settings.warehouse.engine,
        online_store=settings.features.online_store,
        tracking_uri=mask_uri(settings.tracking_uri()),
        ray_address=settings.ray_address() or "local",
        checks=checks,
    )


class _Runner:
    def __init__(self, name: str, fn: CheckFn, settings: Settings, timeout_s: float, fix: str) -> None:
        self.name, self.fn, self.settings, self.timeout_s, self.fix = name, fn, settings, timeout_s, fix
        self.check: Check | None = None
        # daemon: a check stuck in a socket call must not keep the process alive at exit
        self.thread = threading.Thread(target=self._run, name=f"doctor-{name}", daemon=True)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.thread.start()

    def _run(self) -> None:
        try:
            detail = self.fn(self.settings, self.timeout_s)
            check = Check(name=self.name, status="ok", detail=detail)
        except CheckOutcome as out:
            check = Check(name=self.name, status=out.status, detail=out.detail,
                          fix=out.fix if out.fix is not None else (self.fix if out.status != "skip" else None))
        except ModelsvcError as exc:
            check = Check(name=self.name, status="fail", detail=exc.message, fix=exc.hint or self.fix)
        except Exception as exc:  # any backend error is a failed check, named by its type
            check = Check(name=self.name, status="fail", detail=one_line(exc), fix=self.fix)
        check.seconds = round(time.monotonic() - self.t0, 3)
        self.check = check

    def result(self, deadline: float) -> Check:
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.check is None:
            return Check(name=self.name, status="fail", detail=f"no answer within {self.timeout_s:g}s (timed out)",
                         fix=self.fix, seconds=round(time.monotonic() - self.t0, 3))
        return self.check
