"""Two identical ``modelsvc run``: the second skips every step, in a fraction of the first's time, and creates no
dataset version, no MLflow run and no model version (a rollback never lands on a copy of the same model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

LENIENT_GATE = {"MODELSVC_EVALUATION__GATE__MIN_AUC": "0", "MODELSVC_EVALUATION__GATE__MAX_LOG_LOSS": "100",
                "MODELSVC_EVALUATION__GATE__MAX_BRIER": "1", "MODELSVC_EVALUATION__GATE__MAX_CALIBRATION_ERROR": "1"}


def _modelsvc(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("modelsvc")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from modelsvc.cli import main; main()"]
    env = {**os.environ, "MODELSVC_RAY__NUM_CPUS": "1", "MODELSVC_TRAINING__EPOCHS": "1", **LENIENT_GATE}
    return subprocess.run([*cmd, *args], cwd=workdir, capture_output=True, text=True, timeout=900, env=env)


@pytest.mark.timeout(1200)
def test_a_second_identical_run_skips_everything_and_creates_nothing(settings, workdir):
    assert _modelsvc(workdir, "demo-data", "--users", "300", "--days", "10").returncode == 0
    args = ("run", "--start-date", "2025-01-05", "--end-date", "2025-01-10", "--json")
    t0 = time.monotonic()
    first = _modelsvc(workdir, *args)
    first_s = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    one = json.loads(first.stdout)
    assert [s["status"] for s in one["steps"]] == ["ok"] * 6

    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)

    def counts() -> tuple[int, int, int]:
        experiment = client.get_experiment_by_name(settings.mlflow.experiment)
        runs = client.search_runs([experiment.experiment_id])
        versions = client.search_model_versions(f"name='{settings.mlflow.registered_model}'")
        datasets = list((workdir / "data" / "datasets").glob("*/*/manifest.json"))
        return len(datasets), len(runs), len(versions)

    before = counts()
    t0 = time.monotonic()
    second = _modelsvc(workdir, *args)
    second_s = time.monotonic() - t0
    assert second.returncode == 0, second.stderr
    two = json.loads(second.stdout)
    assert [s["status"] for s in two["steps"]] == ["skipped"] * 6, two["steps"]
    assert counts() == before
    assert two["run_id"] == one["run_id"]
    assert two["dataset_version"] == one["dataset_version"]
    assert second_s < 0.15 * first_s, (second_s, first_s)  # wall time, process start included
