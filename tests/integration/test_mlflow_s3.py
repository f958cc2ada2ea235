"""MLflow's artifacts on object storage: the tracking server of ``mlflow_server_s3`` proxies them to
``s3://<bucket>/mlflow`` on the S3 fixture's store. Training logs the model through the server, evaluation and
the registry load it back through the server, and the client holds no AWS credentials at all."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from modelsvc.config import load_settings
from tests.datasets import write_synthetic_dataset
from tests.fixtures.s3 import S3Service
from tests.integration.test_production_pipeline import PROXIED_ARTIFACTS

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

OVERRIDES = {
    "training": {"epochs": 2, "batch_size": 256, "early_stopping_patience": 5},
    "scaling": {"num_workers": 0},
    "mlflow": {"experiment": "s3-artifacts", "registered_model": "ctr_model_s3_test"},
    "evaluation": {"gate": {"min_auc": 0.5, "max_log_loss": 5.0, "max_brier": 1.0, "max_calibration_error": 1.0,
                            "auc_tolerance": 1.0, "log_loss_tolerance": 5.0}},
}


def test_an_artifact_logged_through_the_server_lands_in_the_bucket(
        tmp_path, mlflow_server_s3, s3_server: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    for key in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(key)
    mlflow.set_tracking_uri(mlflow_server_s3.url)
    note = tmp_path / "note.txt"
    note.write_text("hello")
    with mlflow.start_run() as run:
        mlflow.log_artifact(str(note))
    bucket, prefix = str(mlflow_server_s3.artifacts).removeprefix("s3://").split("/", 1)
    assert any(k.endswith(f"{run.info.run_id}/artifacts/note.txt") for k in s3_server.keys(bucket, f"{prefix}/"))


def test_model_logged_evaluated_promoted_and_loaded_through_proxied_s3_artifacts(
        workdir, mlflow_server_s3, s3_server: S3Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelsvc.evaluation import evaluate
    from modelsvc.registry import promote
    from modelsvc.tracking import mlflow_client
    from modelsvc.training import train

    for key in [k for k in os.environ if k.startswith("AWS_")]:  # only the server talks to the store
        monkeypatch.delenv(key)
    for key, value in PROXIED_ARTIFACTS.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server_s3.url)
    settings = load_settings(workdir / "configs", **OVERRIDES)
    write_synthetic_dataset(settings, rows=2000, seed=6)

    result = train(settings)
    client = mlflow_client(settings)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    destination = str(mlflow_server_s3.artifacts)
    bucket, prefix = destination.removeprefix("s3://").split("/", 1)
    keys = s3_server.keys(bucket, f"{prefix}/")
    assert any(k.endswith("/MLmodel") for k in keys), keys
    assert any("/plots/" in k for k in keys), keys
    assert not (workdir / "data" / "mlflow").exists()

    report = evaluate(settings, run_id=result.run_id)  # loads the logged model back through the server
    assert report.verdict == "passed"
    assert promote(settings, run_id=result.run_id).version == "1"

    import mlflow

    mlflow.set_tracking_uri(mlflow_server_s3.url)
    mlflow.set_registry_uri(mlflow_server_s3.url)
    model = mlflow.pyfunc.load_model("models:/ctr_model_s3_test@production")
    scores = model.predict(pd.DataFrame({"total_orders_7d": [1.0], "avg_purchase_value_30d": [None],
                                         "last_seen_platform": ["ios"], "current_page_views_10m": [2.0]}))
    assert 0.0 < float(scores["p_click"].iloc[0]) < 1.0
