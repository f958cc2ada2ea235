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
