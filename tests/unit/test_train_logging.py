"""The driver fills in the per-epoch metrics that rank 0 could not log (real local MLflow store)."""

from __future__ import annotations

from mlflow.entities import Metric

from modelsvc.tracking import ensure_experiment, mlflow_client
from modelsvc.training.run_log import log_epochs as _log_missing_epochs


def test_missing_epochs_are_logged_once(settings):
    client = mlflow_client(settings)
    run_id = client.create_run(ensure_experiment(settings)).info.run_id
    client.log_batch(run_id, metrics=[Metric("val_loss", 0.5, 0, 0), Metric("val_auc", 0.6, 0, 0)])
    history = [{"epoch": e, "train_loss": 0.4 - e / 100, "val_loss": 0.5 - e / 100, "val_auc": 0.6 + e / 100,
                "samples_per_s": 1000.0} for e in range(3)]

    _log_missing_epochs(client, run_id, history)
    _log_missing_epochs(client, run_id, history)  # nothing missing any more: no duplicates

    val_loss = client.get_metric_history(run_id, "val_loss")
    assert sorted(m.step for m in val_loss) == [0, 1, 2]
    assert {m.step: m.value for m in val_loss}[2] == 0.48
    assert sorted(m.step for m in client.get_metric_history(run_id, "train_loss")) == [1, 2]
