"""Training end to end on a real local Ray and a real local MLflow store (both under the test's tmp dir), and in
Ray Train's local mode (``scaling.num_workers: 0``, the training function in this process, no Ray).

Ray is started once by the first training with workers in the session (``train`` reuses an initialised Ray).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.config import load_settings
from modelsvc.errors import RetryableError
from tests.datasets import write_synthetic_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FAST = {"training": {"epochs": 3, "batch_size": 256, "early_stopping_patience": 5}, "ray": {"num_cpus": 2},
        "scaling": {"num_workers": 1}}  # one Ray worker; the local-mode tests below pass num_workers 0


def small_settings(workdir, **over):
    merged = {k: dict(v) for k, v in FAST.items()}
    for k, v in over.items():
        merged.setdefault(k, {}).update(v)
    return load_settings(workdir / "configs", **merged)


def _client(settings):
    from modelsvc.tracking import mlflow_client

    return mlflow_client(settings)


def test_train_cli_end_to_end_logs_one_complete_mlflow_run(workdir, monkeypatch):
    settings = small_settings(workdir)
    write_synthetic_dataset(settings, rows=3000, seed=1)
    # the CLI reads the same settings through the environment
    monkeypatch.setenv("MODELSVC_TRAINING__EPOCHS", "3")
    monkeypatch.setenv("MODELSVC_TRAINING__BATCH_SIZE", "256")
    monkeypatch.setenv("MODELSVC_TRAINING__EARLY_STOPPING_PATIENCE", "5")
    monkeypatch.setenv("MODELSVC_RAY__NUM_CPUS", "2")
    monkeypatch.setenv("MODELSVC_SCALING__NUM_WORKERS", "1")
    result = CliRunner().invoke(app, ["train", "--dataset", "ctr_training", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["model_uri"] == f"runs:/{out['run_id']}/model"
    assert out["epochs_run"] == 3
    assert [h["epoch"] for h in out["history"]] == [0, 1, 2]
    assert out["data_path"] == "resident"
    assert out["device"] == "cpu"
    assert 0.5 < out["metrics"]["val_auc"] <= 1.0
    assert out["resumed"] is False

    client = _client(settings)
    run = client.get_run(out["run_id"])
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["modelsvc.dataset.name"] == "ctr_training"
    assert tags["modelsvc.dataset.version"] == out["dataset_version"]
    assert tags["modelsvc.dataset.fingerprint"] == out["dataset_fingerprint"]
    assert "user_realtime_features:current_page_views_10m" in tags["modelsvc.feature_refs"]
    assert tags["modelsvc.version"]
    assert run.data.params["training.batch_size"] == "256"
    assert run.data.params["model.hidden_layers"] == "[128, 64]"
    assert run.data.params["scaling.num_workers"] == "1"
    for key in ("train_loss", "val_loss", "val_auc", "samples_per_s"):
        assert [m.step for m in client.get_metric_history(out["run_id"], key)] == [0, 1, 2]
    assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [out["dataset_fingerprint"][:36]]
    arts = {a.path for a in client.list_artifacts(out["run_id"], "plots")}
    assert arts == {"plots/loss_curves.png", "plots/roc_validation.png"}

    # the same training again: already finished, same run, no new MLflow run
    again = CliRunner().invoke(app, ["train", "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["run_id"] == out["run_id"]
    assert len(client.search_runs([out["experiment_id"]])) == 1

    # the logged pyfunc in a fresh process, on raw rows with nulls and an unknown platform
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        mlflow.set_tracking_uri({settings.tracking_uri()!r})
        model = mlflow.pyfunc.load_model({out['model_uri']!r})
        rows = pd.DataFrame({{
            "total_orders_7d": [3, None, 0, 3],
            "avg_purchase_value_30d": [25.0, None, None, 25.0],
            "last_seen_platform": ["ios", None, "smart-fridge", None],
            "current_page_views_10m": [5, None, 2, 5],
            "unrelated": ["x", "y", "z", "w"],
        }})
        out = model.predict(rows)
        print(json.dumps({{"columns": list(out.columns), "p": out["p_click"].tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=workdir, env={k: v for k, v in os.environ.items() if not k.startswith("MODELSVC_")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pred["columns"] == ["p_click"]
    assert len(pred["p"]) == 4
    assert all(0.0 < p < 1.0 for p in pred["p"])
    assert pred["p"][0] != pred["p"][3]  # a known platform differs from the unknown bucket


def test_failure_then_rerun_resumes_and_worker_restart_resumes_into_one_run(workdir, monkeypatch):
    """Attempt 1 fails at epoch 1 with no retries left; rerunning resumes from the epoch-0 checkpoint, a worker
    failure at epoch 2 is retried from the epoch-1 checkpoint, and MLflow holds ONE finished run, every epoch
    logged once."""
    base = {"training": {"epochs": 4, "max_failures": 0}}
    settings = small_settings(workdir, **base)
    write_synthetic_dataset(settings, rows=2000, seed=2)

    monkeypatch.setenv("MODELSVCTEST_FAIL_AT_EPOCH", "1")
    from modelsvc.training import train

    with pytest.raises(RetryableError, match="injected worker failure at epoch 1") as err:
        train(settings)
    assert err.value.exit_code == 75
    client = _client(settings)
    runs = client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]

    monkeypatch.setenv("MODELSVCTEST_FAIL_AT_EPOCH", "2")
    retry = small_settings(workdir, training={"epochs": 4, "max_failures": 1})  # max_failures: not in the hash
    rec = RecordingReporter()
    result = train(retry, reporter=rec)
    assert result.resumed is True
    # live progress across the worker restart: epoch 1, then (restarted after the failure at epoch 2) 2 and 3
    assert [u["completed"] for u in rec.updates if u["description"] == "training"][-1] == 4
    assert {u["completed"] for u in rec.updates if u["description"] == "training"} == {2, 3, 4}
    assert result.run_id == runs[0].info.run_id
    assert [h.epoch for h in result.history] == [0, 1, 2, 3]
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_auc"):
        assert sorted(m.step for m in client.get_metric_history(result.run_id, key)) == [0, 1, 2, 3]
    assert len(client.search_runs([result.experiment_id])) == 1


class RecordingReporter:
    """A Reporter that keeps every task update (the CLI renders the same calls with rich)."""

    def __init__(self) -> None:
        self.updates: list[dict] = []

    @contextlib.contextmanager
    def task(self, description, total=None):
        reporter = self

        class _Task:
            def advance(self, amount=1, **info):
                reporter.updates.append({"description": description, "advance": amount, **info})

            def update(self, *, completed=None, total=None, **info):
                reporter.updates.append({"description": description, "completed": completed, **info})

        yield _Task()

    def log(self, message):
        pass


def test_live_epochs_show_progress_and_log_the_epochs_rank0_could_not(workdir):
    """Rank 0 puts each epoch into the driver's progress actor; the driver renders it and logs to MLflow the
    epochs rank 0 reports as not logged (a remote worker without the server's credentials)."""
    import ray

    from modelsvc.tracking import ensure_experiment
    from modelsvc.training.ray_runtime import ensure_ray as _ensure_ray
    from modelsvc.training.tracker import InlineTracker
    from modelsvc.training.trainer import _live_epochs

    settings = small_settings(workdir)
    _ensure_ray(settings)  # a no-op when an earlier test of the session started Ray
    client = _client(settings)
    run_id = client.create_run(ensure_experiment(settings)).info.run_id
    tracker = InlineTracker(settings)
    tracker.start()
    tracker.core.run_id = run_id  # the run this training has open
    rec = RecordingReporter()
    epoch = {"train_loss": 0.5, "val_loss": 0.45, "val_auc": 0.7, "samples_per_s": 1e5, "epoch_time_s": 0.1,
             "epochs": 2, "data_path": "resident", "device": "cpu"}
    with _live_epochs(tracker, 2, rec) as sink:
        ray.get(sink.put.remote({**epoch, "epoch": 0, "mlflow_logged": True}))
        ray.get(sink.put.remote({**epoch, "epoch": 1, "val_loss": 0.4, "mlflow_logged": False}))
    assert [u["completed"] for u in rec.updates] == [1, 2]
    assert rec.updates[-1]["val_loss"] == 0.4
    assert rec.updates[-1]["description"] == "training"
    # epoch 0 was logged by rank 0 (not here: nothing at step 0), epoch 1 by the driver, every metric once
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_loss")] == [(1, 0.4)]
    assert sorted(client.get_run(run_id).data.metrics) == ["epoch_time_s", "samples_per_s", "train_loss",
                                                           "val_auc", "val_loss"]


def test_fit_workers_without_mlflow_for_the_gpu_benchmark(workdir):
    """``fit_workers(tracker=None)`` (what benchmarks/train_throughput.py runs where MLflow is not installed):
    the same Ray Train workers, nothing written to MLflow."""
    from modelsvc.dataset import load_dataset
    from modelsvc.training.trainer import _fit_preprocessor, fit_workers, run_name_for

    settings = small_settings(workdir, training={"epochs": 2, "data_path": "streaming"})
    write_synthetic_dataset(settings, rows=1500, seed=6)
    manifest = load_dataset(settings)
    pre, n = _fit_preprocessor(manifest)
    rec = RecordingReporter()
    _, state = fit_workers(settings, manifest, pre, n, run_name_for(settings, manifest), None, rec)
    assert [h["epoch"] for h in state["history"]] == [0, 1]
    assert state["data_path"] == "streaming"
    assert all(h["samples_per_s"] > 0 for h in state["history"])
    assert [u["completed"] for u in rec.updates] == [1, 2]
    assert not settings.paths.resolve("mlflow").exists()  # no tracking store was even created


@pytest.mark.parametrize(("scaling", "needs"), [
    ({"cpus_per_worker": 64}, "training needs 64 CPU (Ray has 2) for scaling.num_workers=1"),
    ({"num_workers": 3}, "training needs 3 CPU (Ray has 2) for scaling.num_workers=3"),
    ({"use_gpu": True}, "training needs 1 GPU (Ray has 0) for scaling.num_workers=1"),
])
def test_resources_the_local_ray_lacks_are_refused_at_once(workdir, scaling, needs):
    """Ray Train would wait for them forever: a ConfigError (exit 78) before anything starts."""
    from modelsvc.errors import ConfigError
    from modelsvc.training import train

    settings = small_settings(workdir, scaling=scaling)
    write_synthetic_dataset(settings, rows=300, seed=7)
    with pytest.raises(ConfigError) as err:
        train(settings)
    assert err.value.exit_code == 78
    assert err.value.message.startswith(needs)
    client = _client(settings)
    assert client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id]) == []


# -- local mode: Ray Train's num_workers=0 -----------------------------------------------------------------------
def test_local_mode_trains_in_this_process_with_the_same_run_contents(workdir):
    """``num_workers: 0``: the same worker function in the driver, no Ray started; the same MLflow run contents,
    the checkpoint persisted under the run's storage folder, a rerun returns the finished result."""
    import ray
    import torch

    from modelsvc.training import train
    from modelsvc.training.trainer import LOCAL_CHECKPOINT_DIR

    ray_before = ray.is_initialized()
    threads = torch.get_num_threads()
    settings = small_settings(workdir, scaling={"num_workers": 0})
    write_synthetic_dataset(settings, rows=3000, seed=1)
    rec = RecordingReporter()
    out = train(settings, reporter=rec)
    assert ray.is_initialized() is ray_before  # local mode starts no Ray
    assert torch.get_num_threads() == threads  # cpus_per_worker threads for the fit only
    assert out.num_workers == 0
    assert out.epochs_run == 3
    assert [h.epoch for h in out.history] == [0, 1, 2]
    assert out.data_path == "resident"
    assert out.device == "cpu"
    assert out.resumed is False
    assert 0.5 < out.metrics["val_auc"] <= 1.0
    assert [u["completed"] for u in rec.updates if u["description"] == "training"][-1] == 3

    client = _client(settings)
    run = client.get_run(out.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["scaling.num_workers"] == "0"
    workers = json.loads(run.data.tags["modelsvc.train.workers"])
    driver_node = ray.get_runtime_context().get_node_id() if ray_before else None  # an earlier test's Ray
    assert [(w["rank"], w["node_id"], w["pid"]) for w in workers] == [(0, driver_node, os.getpid())]
    for key in ("train_loss", "val_loss", "val_auc", "samples_per_s"):
        assert [m.step for m in client.get_metric_history(out.run_id, key)] == [0, 1, 2]
    assert {a.path for a in client.list_artifacts(out.run_id, "plots")} == {"plots/loss_curves.png",
                                                                              "plots/roc_validation.png"}
    state_file = settings.paths.resolve("ray") / out.ray_run_name / LOCAL_CHECKPOINT_DIR / "state.pt"
    assert state_file.is_file()

    again = train(settings)
    assert again.run_id == out.run_id
    assert again.history == out.history
    assert len(client.search_runs([out.experiment_id])) == 1


def test_local_mode_failure_then_rerun_resumes_and_a_failure_is_retried_into_one_run(workdir, monkeypatch):
    """The Ray test above in local mode, where Ray neither persists checkpoints nor retries: modelsvc does both.
    Attempt 1 fails at epoch 1 with no retries left; the rerun resumes from the epoch-0 state file, a failure at
    epoch 2 is retried in process from the epoch-1 state, and MLflow holds ONE finished run."""
    from modelsvc.training import train

    settings = small_settings(workdir, training={"epochs": 4, "max_failures": 0}, scaling={"num_workers": 0})
    write_synthetic_dataset(settings, rows=2000, seed=2)
    monkeypatch.setenv("MODELSVCTEST_FAIL_AT_EPOCH", "1")
    with pytest.raises(RetryableError, match="injected worker failure at epoch 1") as err:
        train(settings)
    assert err.value.exit_code == 75
    client = _client(settings)
    runs = client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]

    monkeypatch.setenv("MODELSVCTEST_FAIL_AT_EPOCH", "2")
    retry = small_settings(workdir, training={"epochs": 4, "max_failures": 1}, scaling={"num_workers": 0})
    rec = RecordingReporter()
    result = train(retry, reporter=rec)
    assert result.resumed is True
    assert result.run_id == runs[0].info.run_id
    assert {u["completed"] for u in rec.updates if u["description"] == "training"} == {2, 3, 4}
    assert [h.epoch for h in result.history] == [0, 1, 2, 3]
    assert client.get_run(result.run_id).info.status == "FINISHED"
    for key in ("train_loss", "val_loss", "val_auc"):
        assert sorted(m.step for m in client.get_metric_history(result.run_id, key)) == [0, 1, 2, 3]
    assert len(client.search_runs([result.experiment_id])) == 1


def test_local_mode_resumes_like_an_uninterrupted_run(workdir, monkeypatch):
    """Seeds and the persisted optimizer state make a resumed local run replay the uninterrupted one: same losses
    epoch for epoch (CPU, deterministic)."""
    from modelsvc.training import train

    whole = small_settings(workdir, training={"epochs": 3}, scaling={"num_workers": 0},
                           paths={"root": str(workdir / "whole")})
    write_synthetic_dataset(whole, rows=1500, seed=3)
    expected = [h.val_loss for h in train(whole).history]

    parts = small_settings(workdir, training={"epochs": 3, "max_failures": 0}, scaling={"num_workers": 0},
                           paths={"root": str(workdir / "parts")})
    write_synthetic_dataset(parts, rows=1500, seed=3)
    monkeypatch.setenv("MODELSVCTEST_FAIL_AT_EPOCH", "2")
    with pytest.raises(RetryableError):
        train(parts)
    monkeypatch.delenv("MODELSVCTEST_FAIL_AT_EPOCH")
    resumed = train(parts)
    assert resumed.resumed is True
    assert [h.val_loss for h in resumed.history] == pytest.approx(expected, rel=1e-6)
