"""Run history: one JSON file per ``modelsvc run`` under ``<reports>/runs/`` (on the shared storage when
``paths.reports`` points there), listed by ``modelsvc runs``."""

from __future__ import annotations

import json
import os
import socket
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ValidationError

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


def runs_dir(settings: Settings) -> Path:
    return settings.paths.resolve("reports") / "runs"


def record_run(settings: Settings, report: PipelineReport) -> Path:
    started = report.started_at or datetime.now(timezone.utc)
    run_id = f"{started:%Y%m%dT%H%M%S%fZ}-{os.getpid()}"
    record = RunRecord(id=run_id, host=socket.gethostname(), pid=os.getpid(),
                       finished_at=datetime.now(timezone.utc), report=report)
    folder = runs_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{run_id}.json"
    tmp = folder / f".{run_id}.tmp"
    tmp.write_text(record.model_dump_json(indent=2))
    os.replace(tmp, path)
    return path


def list_runs(settings: Settings, *, limit: int | None = 20) -> list[RunRecord]:
    """The most recent runs first (unreadable files are skipped)."""
    folder = runs_dir(settings)
    files = sorted(folder.glob("*.json"), reverse=True) if folder.is_dir() else []
    out: list[RunRecord] = []
    for f in files:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(RunRecord.model_validate(json.loads(f.read_text())))
        except (OSError, ValueError, ValidationError):
            continue
    return out
