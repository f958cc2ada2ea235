"""Run history: one JSON file per ``modelsvc run`` under ``<reports>/runs/`` (on the shared storage when
``paths.reports`` points there), listed by ``modelsvc runs``."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone

from pydantic import BaseModel, ValidationError

from modelsvc import storage
from modelsvc.config import Settings
from modelsvc.pipeline import PipelineReport


class RunRecord(BaseModel):
    """A past pipeline run: when, where, the day range, each step's status, time and result."""

    id: str
    host: str
    pid: int
    finished_at: datetime
    report: PipelineReport

    @property
    def status(self) -> str:
        if self.report.exit_code == 0:
            return "ok"
        failed = next((s for s in self.report.steps if s.step == self.report.failed_step), None)
        return failed.status if failed else "failed"


def runs_dir(settings: Settings) -> str:
    return storage.join(settings.paths.location("reports"), "runs")


def record_run(settings: Settings, report: PipelineReport) -> str:
    started = report.started_at or datetime.now(timezone.utc)
    run_id = f"{started:%Y%m%dT%H%M%S%fZ}-{os.getpid()}"
    record = RunRecord(id=run_id, host=socket.gethostname(), pid=os.getpid(),
                       finished_at=datetime.now(timezone.utc), report=report)
    path = storage.join(runs_dir(settings), f"{run_id}.json")
    storage.write_text(path, record.model_dump_json(indent=2))  # atomic
    return path


def list_runs(settings: Settings, *, limit: int | None = 20) -> list[RunRecord]:
    """The most recent runs first (unreadable files are skipped)."""
    folder = runs_dir(settings)
    files = sorted((n for n in storage.list_dir(folder) if n.endswith(".json") and not n.startswith(".")),
                   reverse=True)
    out: list[RunRecord] = []
    for f in files:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(RunRecord.model_validate(json.loads(storage.read_text(storage.join(folder, f)))))
        except (OSError, ValueError, ValidationError):
            continue
    return out
