"""The logged pyfunc behind the real ``mlflow models serve`` (uvicorn scoring server, ``--env-manager local``).

A tiny model is trained for real (local Ray, local SQLite MLflow store under the test's tmp dir), served from
``runs:/<run_id>/model``, and scored over HTTP on raw feature rows; the answers must equal the in-process
``mlflow.pyfunc.load_model(...).predict`` on the same rows.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from tests.datasets import write_synthetic_dataset
from tests.fixtures._service import free_port, start, stop, tail, unavailable, wait_until
from tests.fixtures.mlflow_server import _mlflow_executable
from tests.integration.test_train import small_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

COLUMNS = [*NUMERIC_FEATURES, *CATEGORICAL_FEATURES]
# raw rows as a client sends them: plain values, nulls in every column, a platform never seen in training
ROWS: list[dict[str, Any]] = [
    {"total_orders_7d": 3, "avg_purchase_value_30d": 25.0, "current_page_views_10m": 5, "last_seen_platform": "ios"},
    {"total_orders_7d": None, "avg_purchase_value_30d": None, "current_page_views_10m": None,
     "last_seen_platform": None},
    {"total_orders_7d": 0, "avg_purchase_value_30d": None, "current_page_views_10m": 2,
     "last_seen_platform": "smart-fridge"},
    {"total_orders_7d": 7, "avg_purchase_value_30d": 180.5, "current_page_views_10m": 14,
     "last_seen_platform": "web"},
]


@dataclass(frozen=True)
class ServedModel:
    url: str
    model_uri: str
    tracking_uri: str
    log: Path


def _status(url: str, *, body: bytes | None = None, content_type: str = "application/json",
            timeout: float = 30) -> tuple[int, str]:
    """(HTTP status, body text) of a GET (no body) or POST, 4xx/5xx included."""
    req = urllib.request.Request(url, data=body, method="GET" if body is None else "POST",
                                 headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


def _split_payload(columns: list[str], data: list[list[Any]]) -> bytes:
    return json.dumps({"dataframe_split": {"columns": columns, "data": data}}).encode()


@pytest.fixture
def served_model(workdir: Path) -> Iterator[ServedModel]:
    exe = _mlflow_executable()
    if exe is None:
        unavailable("the mlflow executable is not installed")
    settings = small_settings(workdir, training={"epochs": 2})
    write_synthetic_dataset(settings, rows=1500, seed=3)
    from modelsvc.training import train

    result = train(settings)
    port, log = free_port(), workdir / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "MODELSVC_"))}
    env["MLFLOW_TRACKING_URI"] = settings.tracking_uri()
    # the scoring server is `bash -c "exec uvicorn ..."`: the venv's uvicorn must come first on PATH, or a
    # uvicorn of another interpreter (e.g. a pyenv shim) runs without this venv's packages
    env["PATH"] = os.pathsep.join([str(Path(exe).parent), env.get("PATH", "")])
    proc = start([exe, "models", "serve", "-m", result.model_uri, "--env-manager", "local",
                  "-h", "127.0.0.1", "-p", str(port)], log, cwd=workdir, env=env)
    served = ServedModel(f"http://127.0.0.1:{port}", result.model_uri, settings.tracking_uri(), log)
    try:
        wait_until(lambda: _status(served.url + "/ping", timeout=2)[0] == 200, timeout=120,
                   what="mlflow models serve", proc=proc, log=log, interval=0.5)
        yield served
    finally:
        stop(proc)


def test_served_model_scores_raw_rows_like_the_in_process_pyfunc(served_model: ServedModel) -> None:
    import mlflow

    url = served_model.url + "/invocations"
    data = [[row[c] for c in COLUMNS] for row in ROWS]
    status, body = _status(url, body=_split_payload(COLUMNS, data))
    assert status == 200, f"{status}: {body[:2000]}\n{tail(served_model.log)}"
    predictions = json.loads(body)["predictions"]
    assert len(predictions) == len(ROWS), body
    served = np.array([p["p_click"] if isinstance(p, dict) else p for p in predictions], dtype="float64")
    assert ((served > 0.0) & (served < 1.0)).all(), served
    assert served[0] != served[3]  # the model does look at its inputs

    df = pd.DataFrame(data, columns=COLUMNS)
    df[NUMERIC_FEATURES] = df[NUMERIC_FEATURES].astype("float64")
    mlflow.set_tracking_uri(served_model.tracking_uri)
    local = mlflow.pyfunc.load_model(served_model.model_uri).predict(df)
    expected = (local["p_click"] if isinstance(local, pd.DataFrame) else pd.Series(local)).to_numpy("float64")
    assert np.allclose(served, expected, rtol=0, atol=1e-6), (served, expected)

    # malformed requests are refused with a client error, never scored
    text_orders = [dict(ROWS[0], total_orders_7d="many")]  # a string where the signature wants a double
    cases = {
        "string in a double column": (_split_payload(COLUMNS, [[r[c] for c in COLUMNS] for r in text_orders]),
                                      "application/json"),
        # every feature column is required by the signature: MLflow's schema check names the missing one
        "a feature column missing": (_split_payload(COLUMNS[1:], [row[1:] for row in data]), "application/json"),
        "empty body": (b"", "application/json"),
        "not JSON": (b"{not json", "application/json"),
        "no dataframe key": (json.dumps({"rows": data}).encode(), "application/json"),
        "unsupported content type": (b"x", "text/plain"),
    }
    for what, (payload, content_type) in cases.items():
        status, body = _status(url, body=payload, content_type=content_type)
        assert 400 <= status < 500, f"{what}: got {status}: {body[:1000]}"
        if what == "a feature column missing":
            assert COLUMNS[0] in json.loads(body)["message"], body[:1000]
