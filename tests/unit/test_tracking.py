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
