"""``modelsvc serve`` / ``predict`` / ``score`` on a small demo store (tests/serving_support.py): the online reads equal
Feast's, the four prediction paths agree to 1e-6 for the same user at the same instant, the HTTP contract (errors,
readiness, metrics), and a promote and a rollback under a bounded loopback load without a failed request."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from modelsvc.cli import app as cli_app
from modelsvc.dataset import FEATURES, NUMERIC_FEATURES
from tests.fixtures._service import free_port
from tests.serving_support import ServingDemo, build_serving_demo

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingDemo]:
    yield from build_serving_demo(tmp_path_factory.mktemp("serving"))


@pytest.fixture
def in_demo(demo: ServingDemo, monkeypatch: pytest.MonkeyPatch) -> ServingDemo:
    """The CLI reads configs/ and data/ relative to the working directory."""
    monkeypatch.chdir(demo.root)
    monkeypatch.setenv("MODELSVC_TRAINING__EPOCHS", "2")
    return demo


def _client(settings: Any, **kwargs: Any) -> Any:
    from fastapi.testclient import TestClient

    from modelsvc.serving.app import create_app

    return TestClient(create_app(settings, **kwargs))


def _equal(a: Any, b: Any) -> bool:
    missing_a = a is None or (isinstance(a, float) and np.isnan(a))
    missing_b = b is None or (isinstance(b, float) and np.isnan(b))
    if missing_a or missing_b:
        return missing_a and missing_b
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return float(a) == pytest.approx(float(b), rel=0, abs=0)


def _metric(text: str, name: str) -> float:
    """The value of one sample line (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    """Feature rows as the logged signature takes them: numbers as float64 (nullable Int64 from Parquet is refused)."""
    return df.astype({c: "float64" for c in NUMERIC_FEATURES})


# -- online reads ----------------------------------------------------------------------------------------------

def test_online_reads_equal_feast_get_online_features(demo: ServingDemo) -> None:
    from modelsvc.serving.sources import OnlineFeatures, get_online_features

    users = [*demo.users, 10**9]  # one user the store never saw
    online = OnlineFeatures.open(demo.settings)
    raw = online.read_raw(users)
    assert online._sqlite is not None  # our read of Feast's tables: equal to Feast's online_read, timestamps too
    sqlite_read, online._sqlite = online._sqlite, None
    assert online.read_raw(users) == raw
    online._sqlite = sqlite_read
    feast_df = get_online_features(demo.settings, users).set_index("user_id")
    compared = 0
    for view, rows in zip(online.views, raw, strict=True):
        for user, (_, values) in zip(users, rows, strict=True):
            for f in view.features:
                got = None if values is None else values[f]
                assert _equal(got, feast_df.loc[user, f]), (user, f, got, feast_df.loc[user, f])
                compared += got is not None
    assert compared > len(demo.users)  # the store is not empty
    # freshness: at the materialization instant every value read counts; past a view's ttl none of it does
    fresh = online.read(users, at=demo.at)
    assert fresh.stale == 0
    assert fresh.values[-1] == dict.fromkeys(online.feature_names)
    later = online.read(users, at=demo.at + timedelta(minutes=31))  # past the realtime view's 30 minutes
    assert all(v["current_page_views_10m"] is None for v in later.values)
    assert any(v["total_orders_7d"] is not None for v in later.values)
    assert later.stale > 0
    online.close()


@pytest.mark.redis
def test_redis_online_reads_equal_feast_and_serve_like_sqlite(demo: ServingDemo, redis_server: Any) -> None:
    from modelsvc.features import materialize
    from modelsvc.serving.sources import OnlineFeatures, get_online_features

    settings = demo.load(**redis_server.settings_overrides(), paths={"feast": str(demo.root / "data" / "feast-redis")})
    materialize(settings, end=demo.at)
    users = [*demo.users, 10**9]
    online = OnlineFeatures.open(settings)
    feast_df = get_online_features(settings, users).set_index("user_id")
    batched = online.read_raw(users)  # every view of every user in one round trip (a Lua script)
    assert online._redis is not None
    assert online._redis.scripted
    for view, rows in zip(online.views, batched, strict=True):
        for user, (_, values) in zip(users, rows, strict=True):
            for f in view.features:
                got = None if values is None else values[f]
                assert _equal(got, feast_df.loc[user, f]), (user, f, got, feast_df.loc[user, f])
    # the same as Feast's own online_read, view by view, timestamps included; and as the pipeline without scripts
    redis_batch, online._redis = online._redis, None
    assert online.read_raw(users) == batched
    online._redis, redis_batch.scripted = redis_batch, False
    assert online.read_raw(users) == batched
    online.close()
    body = {"user_ids": demo.users}
    with _client(settings, clock=lambda: demo.at) as on_redis, _client(demo.settings, clock=lambda: demo.at) as local:
        a, b = on_redis.post("/v1/predict?explain=true", json=body), local.post("/v1/predict?explain=true", json=body)
        assert a.status_code == b.status_code == 200, (a.text, b.text)
        assert a.json() == b.json()


# -- no skew -----------------------------------------------------------------------------------------------------

def test_serve_predict_score_and_the_logged_pyfunc_agree(in_demo: ServingDemo) -> None:
    import mlflow

    from modelsvc.dataset import read_dataset
    from modelsvc.features import historical_features
    from modelsvc.serving import predict
    from modelsvc.tracking import mlflow_client

    demo, settings = in_demo, in_demo.settings
    mlflow_client(settings)
    pyfunc = mlflow.pyfunc.load_model(f"models:/{settings.mlflow.registered_model}@production")
    row = read_dataset(demo.dataset).set_index("event_id").loc[[demo.event_id]]
    expected = float(pyfunc.predict(_typed(row[FEATURES]))["p_click"].iloc[0])

    served = predict(settings, user_ids=[demo.user_id], at=demo.at).predictions[0]
    assert served.features_missing == []
    cli = runner.invoke(cli_app, ["predict", "--user-id", str(demo.user_id), "--at", demo.at.isoformat(), "--json"])
    assert cli.exit_code == 0, cli.output
    with _client(settings, clock=lambda: demo.at) as client:
        http = client.post("/v1/predict", json={"user_ids": [demo.user_id]}).json()["predictions"][0]
    scored = runner.invoke(cli_app, ["score", "--start-date", f"{demo.at:%Y-%m-%d}", "--end-date",
                                     f"{demo.at:%Y-%m-%d}", "--json"])
    assert scored.exit_code == 0, scored.output
    table = _read_predictions(demo.root)
    batch = float(table.set_index("event_id").loc[demo.event_id, "p_click"])
    got = {"predict": served.p_click, "cli": json.loads(cli.stdout)["predictions"][0]["p_click"],
           "serve": http["p_click"], "score": batch}
    for path, p in got.items():
        assert abs(p - expected) <= 1e-6, (path, p, expected)

    # every user at that instant: the online path equals the point-in-time join through the pyfunc
    entity = pd.DataFrame({"user_id": demo.users, "event_timestamp": [pd.Timestamp(demo.at)] * len(demo.users)})
    pit = historical_features(settings, entity).table.to_pandas()
    want = pyfunc.predict(_typed(pit[FEATURES]))["p_click"].to_numpy()
    online = predict(settings, user_ids=demo.users, at=demo.at).predictions
    assert [p.user_id for p in online] == pit["user_id"].tolist()
    assert np.abs(np.array([p.p_click for p in online]) - want).max() <= 1e-6


def _read_predictions(root: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    return ds.dataset(root / "data" / "warehouse" / "predictions", format="parquet",
                      partitioning="hive").to_table().to_pandas()


def test_score_writes_one_partition_per_day_and_is_idempotent(in_demo: ServingDemo) -> None:
    from modelsvc.serving import score

    first = score(in_demo.settings, start_date="2025-03-05", end_date="2025-03-06")
    table = _read_predictions(in_demo.root)
    part = table[table["ds"].astype(str).isin(["2025-03-05", "2025-03-06"])].sort_values("event_id")
    assert [d.isoformat() for d in first.days] == ["2025-03-05", "2025-03-06"]
    assert len(part) == first.rows > 0
    assert part["event_id"].is_unique
    assert set(part.columns) >= {"event_id", "user_id", "event_timestamp", "p_click", "model_version", "ds"}
    assert (part["model_version"] == "1").all()
    assert part["p_click"].between(0, 1).all()
    again = score(in_demo.settings, start_date="2025-03-05", end_date="2025-03-06")
    table2 = _read_predictions(in_demo.root)
    part2 = table2[table2["ds"].astype(str).isin(["2025-03-05", "2025-03-06"])].sort_values("event_id")
    assert again.rows == first.rows
    pd.testing.assert_frame_equal(part.reset_index(drop=True), part2.reset_index(drop=True))
    # a given run's model instead of production
    other = score(in_demo.settings, start_date="2025-03-06", end_date="2025-03-06", run_id=in_demo.other_run_id)
    assert other.model_version == f"run:{in_demo.other_run_id}"


# -- the HTTP contract -------------------------------------------------------------------------------------------

def test_predict_endpoint_results_in_order_explain_overrides_and_metrics(demo: ServingDemo) -> None:
    import mlflow

    from modelsvc.tracking import mlflow_client

    unknown = 10**9
    users = [demo.users[3], unknown, demo.user_id, demo.users[3]]
    with _client(demo.settings, clock=lambda: demo.at) as client:
        assert client.get("/readyz").json()["status"] == "ready"
        res = client.post("/v1/predict?explain=true", json={"user_ids": users})
        assert res.status_code == 200, res.text
        body = res.json()
        preds = body["predictions"]
        assert [p["user_id"] for p in preds] == users
        assert body["model_version"] == "1"
        assert all(p["model_version"] == "1" for p in preds)
        assert preds[1]["features_missing"] == FEATURES or sorted(preds[1]["features_missing"]) == sorted(FEATURES)
        assert preds[0] == preds[3]
        assert set(preds[2]["features"]) == set(FEATURES)

        # prometheus-client keeps one value per metric and labels in a process (mmap files once feast.metrics
        # was imported): other apps of this test process count too, so compare before and after one request
        before = client.get("/metrics").text
        # overrides replace the online values; the model sees exactly the merged row
        res = client.post("/v1/predict?explain=true", json={"instances": [
            {"user_id": demo.user_id, "total_orders_7d": 9, "last_seen_platform": None}]})
        assert res.status_code == 200, res.text
        item = res.json()["predictions"][0]
        assert item["features"]["total_orders_7d"] == 9
        assert item["features_missing"] == ["last_seen_platform"]
        mlflow_client(demo.settings)
        pyfunc = mlflow.pyfunc.load_model(f"models:/{demo.settings.mlflow.registered_model}/1")
        row = _typed(pd.DataFrame([item["features"]])[FEATURES])
        assert abs(float(pyfunc.predict(row)["p_click"].iloc[0]) - item["p_click"]) <= 1e-6

        metrics = client.get("/metrics").text
        for name, added in (('modelsvc_requests_total{endpoint="predict",status="200"}', 1),
                            ("modelsvc_online_read_seconds_count", 1), ("modelsvc_predictions_total", 1),
                            ("modelsvc_feature_values_total", len(FEATURES)),
                            ("modelsvc_feature_values_missing_total", 1)):
            assert _metric(metrics, name) - _metric(before, name) == added, name
        assert _metric(metrics, 'modelsvc_model_version_info{uri="models:/ctr_model/1",version="1"}') == 1
        assert 'modelsvc_request_seconds_bucket{endpoint="predict",le="0.0005"}' in metrics
        assert "modelsvc_features_missing_share" in metrics


@pytest.mark.parametrize(("body", "status", "field"), [
    (b"{not json", 422, "body"),
    (b'{"user_ids": [1, "two"]}', 422, "user_ids[1]"),
    (b'{"user_ids": 5}', 422, "user_ids"),
    (b'{"users": [1]}', 422, "users"),
    (b'{"user_ids": []}', 422, "user_ids"),
    (b'{"instances": [{"user_id": 1, "total_orders_7d": "many"}]}', 422, "instances[0].total_orders_7d"),
    (b'{"instances": [{"user_id": 1, "no_such_feature": 1}]}', 422, "instances[0].no_such_feature"),
    (b'{"instances": [{"total_orders_7d": 1}]}', 422, "instances[0].user_id"),
    (json.dumps({"user_ids": list(range(6))}).encode(), 413, "user_ids"),
])
def test_bad_requests_name_the_field_and_leave_the_service_healthy(demo: ServingDemo, body: bytes, status: int,
                                                                    field: str) -> None:
    settings = demo.load(serving={"max_batch": 5})
    with _client(settings, clock=lambda: demo.at) as client:
        res = client.post("/v1/predict", content=body, headers={"Content-Type": "application/json"})
        assert res.status_code == status, res.text
        err = res.json()["error"]
        assert err["status"] == status, err
        assert err["field"] == field, err
        assert field in err["message"] or field == "body", err
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200
        assert client.post("/v1/predict", json={"user_ids": [demo.user_id]}).status_code == 200


def test_no_production_alias_is_not_ready_with_a_message(demo: ServingDemo) -> None:
    settings = demo.load(mlflow={"registered_model": "no_such_model"})
    with _client(settings) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert any("registered model 'no_such_model' has no 'production' alias" in r for r in ready.json()["reasons"])
        res = client.post("/v1/predict", json={"user_ids": [1]})
        assert res.status_code == 503
        assert "no model loaded" in res.json()["error"]["message"]
        assert client.get("/healthz").status_code == 200


def test_online_store_down_is_503_and_not_ready(demo: ServingDemo) -> None:
    port = free_port()  # nothing listens there
    settings = demo.load(features={"online_store": "redis", "redis": {"host": "127.0.0.1", "port": port}},
                         paths={"feast": str(demo.root / "data" / "feast-redis")})
    from modelsvc.features import feature_store

    feature_store(settings)  # a registry for this store (never materialized)
    with _client(settings) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert any(f"127.0.0.1:{port} is unreachable" in r for r in ready.json()["reasons"]), ready.json()
        t0 = time.perf_counter()
        res = client.post("/v1/predict", json={"user_ids": [1]})
        assert res.status_code == 503
        assert "unreachable" in res.json()["error"]["message"]
        assert time.perf_counter() - t0 < 5
        assert client.get("/healthz").status_code == 200


def test_predict_cli_errors(in_demo: ServingDemo) -> None:
    res = runner.invoke(cli_app, ["predict", "--user-id", "1", "--run-id", "not a run"])
    assert res.exit_code == 64
    assert "--run-id 'not a run' is not an MLflow run id" in res.output
    res = runner.invoke(cli_app, ["predict", "--user-id", "1", "--at", "yesterday"])
    assert res.exit_code == 64
    assert "--at: 'yesterday' is not a timestamp" in res.output
    res = runner.invoke(cli_app, ["predict", "--user-id", str(in_demo.user_id), "--at", in_demo.at.isoformat()])
    assert res.exit_code == 0
    assert str(in_demo.user_id) in res.output


# -- model swaps under load ------------------------------------------------------------------------------------

class _Server:
    """uvicorn on 127.0.0.1 in a thread of this process."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            assert self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def _load(port: int, users: list[int], stop: threading.Event, results: list[tuple[float, float, int, str]],
          rate_per_s: float) -> None:
    """Closed loop on one keep-alive connection, paced to ``rate_per_s``: (start, latency, status, version)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    body = json.dumps({"user_ids": users})
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        try:
            conn.request("POST", "/v1/predict", body=body, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            version = json.loads(data)["model_version"] if resp.status == 200 else ""
            results.append((t0, time.perf_counter() - t0, resp.status, version))
        except (OSError, http.client.HTTPException) as exc:
            results.append((t0, time.perf_counter() - t0, 0, type(exc).__name__))
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        i += 1
        time.sleep(max(0.0, 1 / rate_per_s - (time.perf_counter() - t0)))
    conn.close()


def test_promote_and_rollback_under_load_fail_no_request(demo: ServingDemo) -> None:
    from modelsvc.registry import promote, rollback
    from modelsvc.serving.app import create_app

    settings = demo.settings
    # one list per connection: a connection's requests are answered in order, so its versions must go 1 -> new -> 1;
    # across connections, the order of start times is not the order the server takes requests in (two requests
    # waiting together are read in socket order), so a merged list may flip around a swap
    per_conn: list[list[tuple[float, float, int, str]]] = [[], []]
    stop = threading.Event()
    app = create_app(settings, clock=lambda: demo.at)
    with _Server(app) as server:
        threads = [threading.Thread(target=_load, args=(server.port, demo.users[i * 10:i * 10 + 10], stop,
                                                        per_conn[i], 100.0)) for i in range(2)]
        for t in threads:
            t.start()
        try:
            def wait_for(version: str, timeout: float = 60) -> float:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if all(conn and conn[-1][3] == version for conn in per_conn):
                        return time.perf_counter()
                    time.sleep(0.05)
                raise AssertionError(f"version {version} never served; last: {[c[-1:] for c in per_conn]}")

            wait_for("1")
            t_promote = time.perf_counter()
            moved = promote(settings, run_id=demo.other_run_id, force=True, reason="swap under load")
            t_swapped = wait_for(moved.version)
            back = rollback(settings, reason="swap back under load")
            assert back.version == "1"
            t_back = wait_for("1")
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=30)
    results = sorted(per_conn[0] + per_conn[1])
    statuses = [r[2] for r in results]
    assert statuses.count(200) == len(results), [r for r in results if r[2] != 200][:5]
    for conn in per_conn:
        versions = [r[3] for r in conn]
        changes = [v for i, v in enumerate(versions) if i == 0 or v != versions[i - 1]]
        assert changes == ["1", moved.version, "1"], changes
    steady = [r[1] for r in results if r[0] < t_promote]
    swapping = [r[1] for r in results if t_promote <= r[0] <= t_back]
    p99 = float(np.percentile(swapping, 99))
    print(f"{len(results)} requests; steady p50 {np.median(steady) * 1e3:.2f} ms p99 "
          f"{np.percentile(steady, 99) * 1e3:.2f} ms; during swaps p50 {np.median(swapping) * 1e3:.2f} ms p99 "
          f"{p99 * 1e3:.2f} ms max {max(swapping) * 1e3:.2f} ms; promote seen after {t_swapped - t_promote:.2f}s")
    assert p99 < 1.0  # a shared 2-core machine: generous; the figures are in docs/performance.md
