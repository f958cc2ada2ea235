"""The MLflow side of a training in a child process (``modelsvc.training.tracker``), on a real local MLflow store:
the whole training logged from the child, errors that come back with their exit code, and a run the child ends
FAILED when the training's process dies."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from modelsvc.config import load_settings
from tests.datasets import write_synthetic_dataset

pytestmark = [pytest.mark.integration]

LOCAL = {"training": {"epochs": 2, "batch_size": 256, "early_stopping_patience": 5},
         "scaling": {"num_workers": 0}, "mlflow": {"child_process": "always"}}


def _settings(workdir, **over):
    merged = {k: dict(v) for k, v in LOCAL.items()}
    for k, v in over.items():
        merged.setdefault(k, {}).update(v)
    return load_settings(workdir / "configs", **merged)


@pytest.mark.timeout(300)
def test_a_training_logged_from_the_child_process_is_complete(workdir, monkeypatch):
    from modelsvc import tracking
    from modelsvc.training import tracker as tracker_module
    from modelsvc.training import train
    from modelsvc.training.run_log import WORKERS_TAG

    settings = _settings(workdir)
    write_synthetic_dataset(settings, rows=1500, seed=3)
    started = []
    real = tracker_module.start_tracker
    monkeypatch.setattr(tracker_module, "start_tracker", lambda s: started.append(real(s)) or started[-1])

    result = train(settings)

    assert [type(t).__name__ for t in started] == ["ChildTracker"]
    assert started[0].proc.returncode is not None  # the child is gone once the training is done
    client = tracking.mlflow_client(settings)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(result.run_id, "val_loss")] == [0, 1]
    assert run.data.metrics["best_epoch"] == result.best_epoch
    assert run.data.tags[WORKERS_TAG].startswith('[{"rank": 0')
    assert {a.path for a in client.list_artifacts(result.run_id, "plots")} == {"plots/loss_curves.png",
                                                                               "plots/roc_validation.png"}
    model = tracking.load_model(settings, result.model_uri)
    from modelsvc.dataset import FEATURES, NUMERIC_FEATURES
    from tests.datasets import synthetic_frame

    frame = synthetic_frame(300, seed=4)

    rows = frame[FEATURES].head(20).astype({c: "float64" for c in NUMERIC_FEATURES})
    scores = model.predict(rows)
    assert len(scores) == 20

    again = train(settings)  # the rerun finds the finished training (through the child's lookup)
    assert again.run_id == result.run_id
    assert [type(t).__name__ for t in started] == ["ChildTracker", "ChildTracker"]


@pytest.mark.timeout(120)
def test_an_error_in_the_child_comes_back_with_its_exit_code(workdir):
    """An unreachable tracking server: the child's ServiceUnavailableError (69), raised here by the next op."""
    import socket

    from modelsvc.errors import ServiceUnavailableError
    from modelsvc.training.tracker import ChildTracker, start_tracker

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = _settings(workdir, mlflow={"tracking_uri": f"http://127.0.0.1:{port}", "connect_timeout_s": 2})
    tracker = start_tracker(settings)
    try:
        assert isinstance(tracker, ChildTracker)
        with pytest.raises(ServiceUnavailableError) as err:
            tracker.lookup(None, False)
        assert err.value.exit_code == 69
        assert str(err.value).startswith(f"MLflow tracking server at http://127.0.0.1:{port} is unreachable")
    finally:
        tracker.close()


@pytest.mark.timeout(180)
def test_the_child_ends_the_run_failed_when_the_training_process_is_killed(workdir):
    """SIGKILL of the training's process (nothing runs in it any more): the child sees the pipe close and ends
    the run it opened FAILED, instead of leaving it RUNNING until the next training of that name."""
    settings = _settings(workdir)
    write_synthetic_dataset(settings, rows=600, seed=5)
    script = textwrap.dedent(f"""
        import os, signal, sys
        from modelsvc.config import load_settings
        from modelsvc.dataset import load_dataset
        from modelsvc.training.tracker import start_tracker
        from modelsvc.training.trainer import _fit_preprocessor, run_name_for
        settings = load_settings({str(workdir / "configs")!r}, scaling={{"num_workers": 0}},
                                 mlflow={{"child_process": "always"}})
        manifest = load_dataset(settings)
        pre, _ = _fit_preprocessor(manifest)
        tracker = start_tracker(settings)
        assert type(tracker).__name__ == "ChildTracker"
        tracker.lookup(None, False)
        print(tracker.open(run_name_for(settings, manifest), manifest, None, pre.to_dict()), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True, text=True, timeout=150,
                          env={**os.environ})
    assert proc.returncode == -9, proc.stderr
    run_id = proc.stdout.strip().splitlines()[-1]
    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)
    deadline = time.monotonic() + 60
    while client.get_run(run_id).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert client.get_run(run_id).info.status == "FAILED"


@pytest.mark.timeout(120)
def test_a_child_that_dies_is_an_error_naming_the_way_around_it(workdir):
    from modelsvc.errors import ModelsvcError
    from modelsvc.training.tracker import start_tracker

    tracker = start_tracker(_settings(workdir))
    try:
        tracker.proc.kill()
        tracker.proc.wait()
        with pytest.raises(ModelsvcError) as err:
            tracker.lookup(None, False)
        assert str(err.value).startswith("the MLflow logging process of this training exited (-9)")
        assert "MODELSVC_MLFLOW__CHILD_PROCESS=never" in err.value.hint
    finally:
        tracker.close()
