"""Model behaviour: on data from a known click model, the trained model ranks almost as well as the oracle."""

from __future__ import annotations

import pytest

from modelsvc.config import load_settings
from modelsvc.dataset import NUMERIC_FEATURES
from modelsvc.metrics import roc_auc
from tests.datasets import write_synthetic_dataset

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.integration]


def test_trained_auc_is_within_001_of_the_oracle_auc(workdir):
    import mlflow

    settings = load_settings(workdir / "configs", ray={"num_cpus": 2},
                             training={"epochs": 10, "batch_size": 1024, "lr": 3e-3})
    _, df = write_synthetic_dataset(settings, rows=50_000, seed=11)
    from modelsvc.training import train

    result = train(settings)
    test = df[df["split"] == "test"].astype({c: "float64" for c in NUMERIC_FEATURES})  # as read from Parquet
    oracle = roc_auc(test["is_clicked"], test["p_true"])
    mlflow.set_tracking_uri(settings.tracking_uri())
    pred = mlflow.pyfunc.load_model(result.model_uri).predict(test)
    trained = roc_auc(test["is_clicked"], pred["p_click"].to_numpy())
    print(f"trained AUC {trained:.4f}, oracle AUC {oracle:.4f}, epochs {result.epochs_run}, {result.wall_s:.0f}s")
    assert oracle - trained < 0.01, f"trained AUC {trained:.4f} vs oracle {oracle:.4f}"
    # calibrated enough to be useful: mean prediction close to the click rate
    assert abs(pred["p_click"].mean() - test["is_clicked"].mean()) < 0.02
