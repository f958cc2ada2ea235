"""No path leaves an MLflow run RUNNING (real trainings in a child process, as a scheduler runs them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def _train(workdir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("modelsvc")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from modelsvc.cli import main; main()"]
    return subprocess.run([*cmd, "train"], cwd=workdir, capture_output=True, text=True, timeout=400,
                          env={**os.environ, "MODELSVC_RAY__NUM_CPUS": "1", **env})


def _runs(settings):
    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)
    experiment = client.get_experiment_by_name(settings.mlflow.experiment)
    return client, {r.info.run_id: r for r in client.search_runs([experiment.experiment_id])}


@pytest.mark.timeout(300)
def test_a_file_where_the_training_folder_should_be_exits_73_and_fails_the_run(settings, workdir):
    """Today the run created before the training's try block stayed RUNNING forever."""
    from modelsvc.training.trainer import run_name_for
    from tests.datasets import write_synthetic_dataset

    manifest, _ = write_synthetic_dataset(settings, rows=300)
    blocker = settings.paths.resolve("ray") / run_name_for(settings, manifest)  # the training's own folder
    blocker.parent.mkdir(parents=True)
    blocker.write_text("x")
    proc = _train(workdir)
    assert proc.returncode == 73, proc.stderr
    assert proc.stderr.splitlines()[0].startswith("Error: cannot create "), proc.stderr
    _, runs = _runs(settings)
    assert [r.info.status for r in runs.values()] == ["FAILED"]


@pytest.mark.timeout(400)
def test_the_next_train_of_a_run_name_ends_a_run_orphaned_by_sigkill(settings, workdir):
    from modelsvc.tracking import ensure_experiment, mlflow_client
    from modelsvc.training.trainer import run_name_for
    from tests.datasets import write_synthetic_dataset

    manifest, _ = write_synthetic_dataset(settings, rows=300)
    settings.training.epochs = 1  # what the child trains with (the run name hashes the training settings)
    client = mlflow_client(settings)
    # what a SIGKILLed train leaves behind: a RUNNING run of that training, its id never recorded
    orphan = client.create_run(ensure_experiment(settings), run_name="orphan",
                               tags={"modelsvc.ray_run_name": run_name_for(settings, manifest)}).info.run_id
    proc = _train(workdir, MODELSVC_TRAINING__EPOCHS="1")
    assert proc.returncode == 0, proc.stderr
    _, runs = _runs(settings)
    assert runs.pop(orphan).info.status == "FAILED"
    assert [r.info.status for r in runs.values()] == ["FINISHED"]


@pytest.mark.timeout(400)
def test_a_resumed_training_does_not_log_an_epoch_twice(settings, workdir):
    """An attempt that dies after logging epoch 1 but before its checkpoint: Ray restarts the workers from the
    epoch-0 checkpoint, and epoch 1 runs again; its metrics are logged once."""
    from tests.datasets import write_synthetic_dataset

    write_synthetic_dataset(settings, rows=300)
    proc = _train(workdir, MODELSVC_TRAINING__EPOCHS="3", MODELSVC_TRAINING__EARLY_STOPPING_PATIENCE="10",
                  MODELSVC_TRAINING__MAX_FAILURES="1", MODELSVCTEST_FAIL_AFTER_LOG_EPOCH="1")
    assert proc.returncode == 0, proc.stderr
    client, runs = _runs(settings)
    [run_id] = runs
    for metric in ("val_loss", "train_loss"):
        assert sorted(m.step for m in client.get_metric_history(run_id, metric)) == [0, 1, 2]
