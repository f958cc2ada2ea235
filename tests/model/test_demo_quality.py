"""Model behaviour on the default demo: `modelsvc run` (what `make demo` runs) trains a model whose test AUC is
within 0.01 of the oracle AUC of the demo's known click model, passes the gate and is promoted."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app

pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.integration]

runner = CliRunner()
DEMO_START, DEMO_END = "2025-01-01", "2025-01-28"  # the Makefile's demo range


def test_default_demo_run_reaches_oracle_auc(workdir, monkeypatch):
    # as `modelsvc run` runs from a shell: MLflow's side (train's logging, evaluate, promote) in a child process
    # (the default "auto" would log in this process, which imported MLflow for earlier tests)
    monkeypatch.setenv("MODELSVC_MLFLOW__CHILD_PROCESS", "always")
    demo = runner.invoke(app, ["demo-data", "--start-date", DEMO_START, "--json"])
    assert demo.exit_code == 0, demo.output

    result = runner.invoke(app, ["run", "--start-date", DEMO_START, "--end-date", DEMO_END, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["status"] for s in report["steps"]] == ["ok"] * 6
    assert report["promoted_version"] == "1"

    evaluation = next(s for s in report["steps"] if s["step"] == "evaluate")["summary"]
    assert evaluation["verdict"] == "passed"
    gap = evaluation["oracle_auc"] - evaluation["auc"]
    assert abs(gap) <= 0.01, f"test AUC {evaluation['auc']:.4f} vs oracle {evaluation['oracle_auc']:.4f}"

    # the promoted model serves from the registry alias and scores raw feature rows
    import mlflow
    import pandas as pd

    from modelsvc.config import load_settings
    from modelsvc.tracking import mlflow_client

    settings = load_settings(workdir / "configs")
    mlflow_client(settings)
    model = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.registered_model}@{settings.mlflow.production_alias}")
    rows = pd.DataFrame({"total_orders_7d": [0.0, 3.0], "avg_purchase_value_30d": [None, 42.0],
                         "last_seen_platform": ["web", "not-a-platform"], "current_page_views_10m": [None, 5.0]})
    scores = model.predict(rows)["p_click"]
    assert len(scores) == 2
    assert scores.between(0, 1).all()

    # a second run on the same data: nothing changed, so evaluate and promote are skipped (the trained run is
    # already production) and no new model version appears
    again = runner.invoke(app, ["run", "--start-date", DEMO_START, "--end-date", DEMO_END, "--skip-etl", "--json"])
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    statuses = {s["step"]: s["status"] for s in second["steps"]}
    assert statuses["evaluate"] == "skipped", second
    assert statuses["promote"] == "skipped", second
    assert second["promoted_version"] is None
    client = mlflow_client(settings)
    versions = client.search_model_versions(f"name='{settings.mlflow.registered_model}'")
    assert [str(v.version) for v in versions] == ["1"]
