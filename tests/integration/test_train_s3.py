"""``ray.storage_path = s3://…``: Ray Train's checkpoints, modelsvc's run state and resume on the S3 API server
of the fixtures (moto's standalone server, IAM auth on), and one-line errors for a bad storage location.

The training runs in a subprocess (``modelsvc train --json``) with the store's AWS_* variables in its
environment, as a Pod gets them from a Secret: its local Ray's workers inherit them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelsvc.config import load_settings
from modelsvc.errors import NotFoundError, PermissionDeniedError, ServiceUnavailableError
from tests.datasets import write_synthetic_dataset
from tests.fixtures.ray_cluster import node_env
from tests.fixtures.s3 import S3Service

pytestmark = [pytest.mark.integration]

TRAIN_ENV = {
    "MODELSVC_SCALING__NUM_WORKERS": "1",
    "MODELSVC_SCALING__USE_GPU": "false",
    "MODELSVC_RAY__NUM_CPUS": "2",
    "MODELSVC_TRAINING__EPOCHS": "3",
    "MODELSVC_TRAINING__BATCH_SIZE": "256",
    "MODELSVC_TRAINING__EARLY_STOPPING_PATIENCE": "5",
}


def _train(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "modelsvc"), "train", "--json"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkpoints_run_state_and_resume_on_s3(workdir: Path, s3_env: S3Service, s3_bucket: str) -> None:
    """Attempt 1 fails at epoch 1 with no retries left (75) after Ray Train wrote the epoch-0 checkpoint to the
    bucket; attempt 2 resumes from it and a worker failure at epoch 2 is retried from the bucket's epoch-1
    checkpoint; a rerun finds the finished run through the run-state file on the bucket. Nothing of Ray's lands
    on the local root."""
    settings = load_settings(workdir / "configs")
    write_synthetic_dataset(settings, rows=1500, seed=4)
    bucket = s3_bucket.removeprefix("s3://")
    env = {k: v for k, v in node_env().items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env |= TRAIN_ENV | s3_env.env() | {"MODELSVC_RAY__STORAGE_PATH": f"{s3_bucket}/ray"}

    failed = _train(env | {"MODELSVC_TRAINING__MAX_FAILURES": "0", "MODELSVCTEST_FAIL_AT_EPOCH": "1"}, workdir)
    assert failed.returncode == 75, failed.stderr[-3000:]
    assert "injected worker failure at epoch 1" in failed.stderr
    assert any("/checkpoint_" in k for k in s3_env.keys(bucket, "ray/")), s3_env.keys(bucket)

    proc = _train(env | {"MODELSVC_TRAINING__MAX_FAILURES": "1", "MODELSVCTEST_FAIL_AT_EPOCH": "2"}, workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["resumed"] is True
    assert out["epochs_run"] == 3
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2]
    assert out["ray_storage_path"] == f"{s3_bucket}/ray"
    run = out["ray_run_name"]

    keys = s3_env.keys(bucket, f"ray/{run}/")
    assert f"ray/{run}/modelsvc_run.json" in keys
    assert any(k.startswith(f"ray/{run}/checkpoint_") and k.endswith("/state.pt") for k in keys), keys
    state = json.loads(s3_env.client().get_object(Bucket=bucket, Key=f"ray/{run}/modelsvc_run.json")["Body"].read())
    assert state["mlflow_run_id"] == out["run_id"]
    assert state["result"]["epochs_run"] == 3
    assert not (settings.paths.resolve("root") / "ray").exists()  # Ray's storage is the bucket alone

    # the rerun reads the run state from the bucket: already finished, the same run, no training
    again = _train(env | {"MODELSVCTEST_FAIL_AT_EPOCH": ""}, workdir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout) == out  # the stored result, wall time included: nothing ran again


def _storage_location(workdir: Path, location: str) -> str:
    from modelsvc.training.ray_runtime import storage_location

    return storage_location(load_settings(workdir / "configs", ray={"storage_path": location}))


@pytest.mark.timeout(120)
def test_bad_ray_storage_fails_at_once_with_one_line(workdir: Path, s3_env: S3Service, s3_bucket: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad ``ray.storage_path`` is 66, 77 or 69 before any training starts, never a retryable 75."""
    from modelsvc import storage
    from modelsvc.errors import ConfigError

    assert _storage_location(workdir, f"{s3_bucket}/ray") == f"{s3_bucket}/ray"
    with pytest.raises(NotFoundError, match=r"bucket 'no-such-bucket-r' of ray\.storage_path does not exist") as e:
        _storage_location(workdir, "s3://no-such-bucket-r/ray")
    assert e.value.exit_code == 66
    # train checks it before it reads anything: here no dataset was built, and the bucket is what it reports
    from modelsvc.training import train
    from modelsvc.training.worker import read_state_file

    with pytest.raises(NotFoundError, match=r"bucket 'no-such-bucket-r' of ray\.storage_path"):
        train(load_settings(workdir / "configs", ray={"storage_path": "s3://no-such-bucket-r/ray"}))
    assert read_state_file(f"{s3_bucket}/ray/no-run-here") is None  # no state: a fresh training
    with pytest.raises(ConfigError, match=r"ray\.storage_path: Value error, unsupported URI scheme 'ftp://'"):
        _storage_location(workdir, "ftp://host/ray")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    storage.clear_cache()
    with pytest.raises(PermissionDeniedError) as refused:
        _storage_location(workdir, f"{s3_bucket}/ray")
    assert "wrong-secret-value" not in str(refused.value)

    from tests.fixtures._service import free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    storage.clear_cache()
    with pytest.raises(ServiceUnavailableError, match="object store unreachable"):
        _storage_location(workdir, f"{s3_bucket}/ray")
    # local mode's resume state: an unreachable store is an error, never "no state" (a restart from epoch 0)
    with pytest.raises(ServiceUnavailableError, match="object store unreachable"):
        read_state_file(f"{s3_bucket}/ray/some-run")
