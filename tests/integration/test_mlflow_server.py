"""train → evaluate → promote → rollback against a real MLflow tracking server (session fixture ``mlflow_server``),
found through ``MLFLOW_TRACKING_URI`` (``mlflow.tracking_uri`` unset); credentials never reach errors or logs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.config import load_settings
from tests.datasets import write_synthetic_dataset
from tests.registry_support import TRUE_COEF, log_fake_run

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# tiny training; a permissive gate: this file tests the backend, not the model's quality
OVERRIDES = {
    "training": {"epochs": 2, "batch_size": 256, "early_stopping_patience": 5},
    "ray": {"num_cpus": 2},
    "evaluation": {"gate": {"min_auc": 0.5, "max_log_loss": 5.0, "max_brier": 1.0, "max_calibration_error": 1.0,
                            "auc_tolerance": 1.0, "log_loss_tolerance": 5.0}},
}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_train_evaluate_promote_rollback_through_the_server(workdir, mlflow_server, monkeypatch):
    from modelsvc.evaluation import evaluate
    from modelsvc.registry import promote, rollback
    from modelsvc.tracking import mlflow_client
    from modelsvc.training import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    settings = load_settings(workdir / "configs", mlflow={"experiment": "server-e2e"}, **OVERRIDES)
    assert settings.mlflow.tracking_uri is None
    assert settings.tracking_uri() == mlflow_server.url
    manifest, _ = write_synthetic_dataset(settings, rows=2000, seed=3)

    first = train(settings)
    client = mlflow_client(settings)
    run = client.get_run(first.run_id)
    assert run.info.status == "FINISHED"
    # artifacts were proxied by the server, into its own artifact folder; nothing under ./data/mlflow
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    assert "plots" in {a.path for a in client.list_artifacts(first.run_id)}
    assert [m.step for m in client.get_metric_history(first.run_id, "val_auc")] == [0, 1]
    assert not (workdir / "data" / "mlflow").exists()
    assert list(mlflow_server.artifacts.rglob("MLmodel"))
    # a second candidate to promote over it (a stand-in pyfunc: a second training would only cost time)
    second = SimpleNamespace(run_id=log_fake_run(settings, manifest, TRUE_COEF))

    r1 = evaluate(settings, run_id=first.run_id)
    assert r1.verdict == "passed"
    assert r1.production_version is None
    p1 = promote(settings, run_id=first.run_id, reason="first model")
    assert (p1.version, p1.changed, p1.previous_version) == ("1", True, None)

    r2 = evaluate(settings, run_id=second.run_id)
    assert r2.verdict == "passed"
    assert r2.production_version == "1"
    assert client.get_run(second.run_id).data.tags["modelsvc.eval.production_version"] == "1"
    p2 = promote(settings, run_id=second.run_id)
    assert (p2.version, p2.previous_version) == ("2", "1")
    name = settings.mlflow.registered_model
    assert client.get_model_version_by_alias(name, "production").version == "2"
    assert client.get_model_version_by_alias(name, "previous-production").version == "1"

    back = rollback(settings, reason="server e2e")
    assert (back.action, back.version, back.previous_version, back.run_id) == ("rollback", "1", "2", first.run_id)
    assert client.get_model_version_by_alias(name, "production").run_id == first.run_id

    # the production model, loaded back from the server in a fresh process, predicts
    script = textwrap.dedent(f"""
        import json, mlflow, pandas as pd
        model = mlflow.pyfunc.load_model("models:/{name}@production")
        rows = pd.DataFrame({{"total_orders_7d": [3, None], "avg_purchase_value_30d": [25.0, None],
                              "last_seen_platform": ["ios", None], "current_page_views_10m": [5, None]}})
        out = model.predict(rows)
        print(json.dumps({{"run_id": model.metadata.run_id, "columns": list(out.columns),
                           "p": out["p_click"].tolist()}}))
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = mlflow_server.url
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180,
                          cwd=workdir, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pred = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pred["run_id"] == first.run_id
    assert pred["columns"] == ["p_click"]
    assert len(pred["p"]) == 2
    assert all(0.0 < p < 1.0 for p in pred["p"])


SECRET = "mlflow-pw-never-shown"


@pytest.mark.parametrize("how", ["settings-password", "uri-userinfo"])
@pytest.mark.parametrize("command", [["train", "--json"], ["promote", "--run-id", "0" * 32, "--json"]])
def test_unreachable_server_error_never_shows_the_password(workdir, monkeypatch, caplog, how, command):
    port = _closed_port()  # and MLflow's default retries with backoff: the connect check must fail at once
    if how == "settings-password":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("MODELSVC_MLFLOW__USERNAME", "svc_modelsvc")
        monkeypatch.setenv("MODELSVC_MLFLOW__PASSWORD", SECRET)
        shown = f"http://127.0.0.1:{port}"
    else:
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://svc_modelsvc:{SECRET}@127.0.0.1:{port}")
        shown = f"http://svc_modelsvc:**********@127.0.0.1:{port}"
    # mlflow_client passes credentials on through MLflow's variables: drop them after the test
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    settings = load_settings(workdir / "configs")
    write_synthetic_dataset(settings, rows=300, seed=4)
    caplog.set_level("DEBUG")

    t0 = time.monotonic()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 69, result.output
    assert result.stderr.splitlines()[0] == f"Error: MLflow tracking server at {shown} is unreachable " \
                                            "(Connection refused)"
    assert time.monotonic() - t0 < 30  # not MLflow's minutes of retries
    assert SECRET not in result.output
    assert SECRET not in caplog.text
    # -v prints the traceback: still no password in it
    verbose = CliRunner().invoke(app, ["-v", *command])
    assert verbose.exit_code == 69
    assert SECRET not in verbose.output


@pytest.mark.parametrize("credentials", ["wrong-password", "none"])
def test_auth_server_refusing_the_credentials_is_exit_77_without_the_password(workdir, monkeypatch,
                                                                               mlflow_auth_server, credentials):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_auth_server.url)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    if credentials == "wrong-password":
        monkeypatch.setenv("MODELSVC_MLFLOW__USERNAME", mlflow_auth_server.admin[0])
        monkeypatch.setenv("MODELSVC_MLFLOW__PASSWORD", SECRET)
    write_synthetic_dataset(load_settings(workdir / "configs"), rows=300, seed=4)

    result = CliRunner().invoke(app, ["train", "--json"])
    assert result.exit_code == 77, result.output
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: MLflow tracking server at {mlflow_auth_server.url} refused the credentials (HTTP 401)"
    assert lines[1].startswith("Hint: set mlflow.username and mlflow.password")
    assert SECRET not in result.output
    assert result.stdout == ""


def test_auth_server_with_the_right_credentials_and_a_user_without_permission(workdir, monkeypatch,
                                                                              mlflow_auth_server):
    from mlflow.server.auth.client import AuthServiceClient

    from modelsvc.tracking import ensure_experiment

    admin, admin_pw = mlflow_auth_server.admin
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", admin)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_pw)
    AuthServiceClient(mlflow_auth_server.url).create_user("reader", "reader-pw-123456")
    admin_settings = load_settings(workdir / "configs", mlflow={"tracking_uri": mlflow_auth_server.url,
                                                               "username": admin, "password": admin_pw})
    experiment_id = ensure_experiment(admin_settings)  # the admin may create it
    assert experiment_id

    # a user with READ on the admin's experiment (default_permission) may read it but not log a run into it
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_auth_server.url)
    monkeypatch.setenv("MODELSVC_MLFLOW__USERNAME", "reader")
    monkeypatch.setenv("MODELSVC_MLFLOW__PASSWORD", "reader-pw-123456")
    write_synthetic_dataset(load_settings(workdir / "configs"), rows=300, seed=4)
    result = CliRunner().invoke(app, ["train", "--json"])
    assert result.exit_code == 77, result.output
    assert result.stderr.splitlines()[0] == f"Error: MLflow tracking server at {mlflow_auth_server.url} denied " \
                                            "access (HTTP 403)"
    assert "reader-pw-123456" not in result.output
