"""modelsvc doctor against the real Redis, MLflow server and two-node Ray cluster started by the fixtures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.config import load_settings
from modelsvc.doctor import check_all

pytestmark = [pytest.mark.integration, pytest.mark.redis]


@pytest.fixture
def with_raw_events(workdir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = workdir / "data" / "warehouse" / "raw_events" / "ds=2026-01-01"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": ["e1"]}), folder / "part-0.parquet")
    return workdir


def test_doctor_passes_against_redis_and_mlflow_server(with_raw_events, redis_server, mlflow_server):
    from mlflow.tracking import MlflowClient

    # registry_uri too: else the client takes the process-wide one an earlier test may have set
    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    if not client.search_registered_models(filter_string="name='doctor_model'"):
        client.create_registered_model("doctor_model")
    settings = load_settings(with_raw_events / "configs", **redis_server.settings_overrides(),
                             mlflow={"tracking_uri": mlflow_server.url, "registered_model": "doctor_model"})
    report = check_all(settings)
    checks = {c.name: c for c in report.checks}
    assert report.ok, [c for c in report.checks if c.status == "fail"]
    assert checks["feast.online_store"].status == "ok"
    assert checks["feast.online_store"].detail.startswith(f"redis 127.0.0.1:{redis_server.port}/0: PONG")
    assert checks["mlflow.tracking"].status == "ok"
    assert checks["mlflow.registry"].status == "ok"
    assert "'doctor_model': no 'production' alias yet" in checks["mlflow.registry"].detail


@pytest.mark.slow
def test_doctor_cli_reads_the_cluster_from_the_environment(with_raw_events, redis_server, mlflow_server,
                                                           ray_cluster, monkeypatch):
    monkeypatch.setenv("MODELSVC_FEATURES__ONLINE_STORE", "redis")
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__HOST", redis_server.host)
    monkeypatch.setenv("MODELSVC_FEATURES__REDIS__PORT", str(redis_server.port))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.url)
    monkeypatch.setenv("RAY_ADDRESS", ray_cluster.address)
    result = CliRunner().invoke(app, ["doctor", "--json", "--timeout", "60"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is True
    assert data["ray_address"] == ray_cluster.address
    ray_check = next(c for c in data["checks"] if c["name"] == "ray")
    assert ray_check["status"] == "ok"
    assert ray_check["detail"].startswith(f"cluster {ray_cluster.address}: 2 nodes, 2 CPUs, 0 GPUs")


@pytest.mark.timeout(180)
def test_doctor_names_refused_mlflow_credentials_without_showing_them(workdir, mlflow_auth_server, monkeypatch):
    """The MLflow checks go through MLflow's own client (no retries, bounded timeout): a refused password is a
    failed row saying so, with the fix, and the password nowhere in the report."""
    secret = "doctor-wrong-pw-123"
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("MODELSVC_MLFLOW__PASSWORD", secret)
    settings = load_settings(workdir / "configs", mlflow={"tracking_uri": mlflow_auth_server.url,
                                                          "username": mlflow_auth_server.admin[0]})
    report = check_all(settings, timeout_s=60)
    checks = {c.name: c for c in report.checks}
    for name in ("mlflow.tracking", "mlflow.registry"):
        assert checks[name].status == "fail", checks[name]
        assert checks[name].detail == (f"MLflow tracking server at {mlflow_auth_server.url} refused the "
                                       "credentials (HTTP 401)")
    assert checks["mlflow.tracking"].fix.startswith("set mlflow.username and mlflow.password")
    assert secret not in report.model_dump_json()
