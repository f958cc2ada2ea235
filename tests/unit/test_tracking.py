"""Which MLflow failures become our errors (the real servers are in tests/integration/test_mlflow_server.py)."""

from __future__ import annotations


def test_only_tracking_errors_are_mapped(settings):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED
    from requests.exceptions import ConnectionError as RequestsConnectionError

    from modelsvc.errors import PermissionDeniedError, ServiceUnavailableError
    from modelsvc.tracking import tracking_error

    unauth = tracking_error(settings, MlflowException("API request failed", error_code=UNAUTHENTICATED))
    assert isinstance(unauth, PermissionDeniedError)
    assert unauth.message.endswith("refused the credentials (HTTP 401)")
    denied = tracking_error(settings, MlflowException("no", error_code=PERMISSION_DENIED))
    assert isinstance(denied, PermissionDeniedError)
    assert denied.message.endswith("denied access (HTTP 403)")
    down = tracking_error(settings, RequestsConnectionError("Max retries exceeded: Connection refused"))
    assert isinstance(down, ServiceUnavailableError)
    assert down.exit_code == 69
    # not MLflow's: left alone, whatever the text says
    assert tracking_error(settings, OSError("s3: Connection refused")) is None
    assert tracking_error(settings, MlflowException("model version 401 not found")) is None


def test_a_client_leaves_the_environment_to_settings_loaded_later(tmp_path, monkeypatch):
    """``mlflow.set_tracking_uri`` writes MLFLOW_TRACKING_URI into the process environment, and
    ``Settings.tracking_uri`` reads that variable as the user's choice: the settings of a second project folder,
    loaded after the first one's client, used the first one's store (a model promoted there was not found)."""
    import os

    import mlflow

    from modelsvc.config import load_settings
    from modelsvc.tracking import mlflow_client
    from tests.conftest import CONFIGS

    first = load_settings(CONFIGS, paths={"root": str(tmp_path / "a")})
    mlflow_client(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert "MLFLOW_REGISTRY_URI" not in os.environ
    second = load_settings(CONFIGS, paths={"root": str(tmp_path / "b")})
    assert second.tracking_uri() == "sqlite:///" + str(tmp_path / "b" / "mlflow" / "mlflow.db")
    assert mlflow.get_tracking_uri() == first.tracking_uri()  # the fluent API follows the last client
    assert mlflow.get_registry_uri() == first.tracking_uri()

    # the user's own variables are theirs: kept as they were, whatever the settings name
    mine = "sqlite:///" + str(tmp_path / "mine.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mine)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", mine)
    third_uri = "sqlite:///" + str(tmp_path / "c.db")
    mlflow_client(load_settings(CONFIGS, paths={"root": str(tmp_path / "c")}, mlflow={"tracking_uri": third_uri}))
    assert (os.environ["MLFLOW_TRACKING_URI"], os.environ["MLFLOW_REGISTRY_URI"]) == (mine, mine)
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (third_uri, third_uri)


def test_local_store_is_created_once_with_mlflows_schema(tmp_path):
    """The fast creation of a new local store (migrations without a disk sync per commit, then linked into place)
    leaves the store MLflow itself would: every table, the head schema revision, usable by MLflow's client."""
    import sqlite3

    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.tracking import MlflowClient

    from modelsvc.tracking import create_local_store

    db = tmp_path / "mlflow.db"
    assert create_local_store(db) is True
    assert create_local_store(db) is False  # there already: left alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]  # no temporary file left
    con = sqlite3.connect(db)
    assert con.execute("select version_num from alembic_version").fetchall() == [(_get_latest_schema_revision(),)]
    tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
    assert {"experiments", "runs", "metrics", "registered_models", "model_versions", "logged_models"} <= tables
    con.close()
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.create_experiment("e", artifact_location=str(tmp_path / "artifacts"))
    assert client.get_experiment(exp).name == "e"


def test_an_existing_local_store_is_never_replaced(tmp_path, monkeypatch):
    import os

    from modelsvc import tracking

    db = tmp_path / "mlflow.db"
    db.write_bytes(b"another process's store")
    assert tracking.create_local_store(db) is False
    assert db.read_bytes() == b"another process's store"

    # another process creates it while this one runs the migrations: its store stays, ours is dropped
    db.unlink()
    real_fsync = os.fsync

    def racing_fsync(fd: int) -> None:
        real_fsync(fd)
        db.write_bytes(b"the winner's store")

    monkeypatch.setattr(tracking.os, "fsync", racing_fsync)
    assert tracking.create_local_store(db) is False
    assert db.read_bytes() == b"the winner's store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_runs_uri_resolves_to_the_runs_logged_model(settings):
    """``runs:/<run>/model`` is loaded as ``models:/<model id>`` (no first try at the run's own artifacts, which a
    server with S3 artifacts retries for minutes); anything else is left as it is."""
    from modelsvc import tracking
    from tests.registry_support import log_fake_run

    run_id = log_fake_run(settings, None)
    client = tracking.mlflow_client(settings)
    resolved = tracking._logged_model_uri(client, f"runs:/{run_id}/model")
    [model] = client.search_logged_models(experiment_ids=[client.get_run(run_id).info.experiment_id])
    assert resolved == f"models:/{model.model_id}"
    assert model.source_run_id == run_id
    assert tracking._logged_model_uri(client, f"runs:/{run_id}/other") == f"runs:/{run_id}/other"
    assert tracking._logged_model_uri(client, "runs:/0123456789abcdef/model") == "runs:/0123456789abcdef/model"
    assert tracking._logged_model_uri(client, "models:/ctr@production") == "models:/ctr@production"
    loaded = tracking.load_model(settings, f"runs:/{run_id}/model")
    assert loaded.metadata.model_id == model.model_id
