"""modelsvc.doctor against a fresh working directory and against unreachable backends (fast, no services)."""

from __future__ import annotations

import socket
import time

import pytest

from modelsvc.config import load_settings
from modelsvc.doctor import check_all
from modelsvc.errors import ServiceUnavailableError


def _by_name(report):
    return {c.name: c for c in report.checks}


def test_fresh_workdir_fails_on_the_missing_warehouse_with_fixes(settings, workdir):
    report = check_all(settings)
    checks = _by_name(report)
    assert list(checks) == ["warehouse.engine", "warehouse.raw_events", "warehouse.feature_tables", "feast.repo",
                            "feast.registry", "feast.online_store", "mlflow.tracking", "mlflow.registry", "ray"]
    assert not report.ok
    assert [c.name for c in report.failed] == ["warehouse.engine", "warehouse.raw_events"]
    assert checks["warehouse.engine"].detail == f"warehouse folder {workdir / 'data' / 'warehouse'} does not exist"
    assert "modelsvc demo-data" in checks["warehouse.raw_events"].fix
    assert checks["warehouse.feature_tables"].status == "warn"
    assert "modelsvc etl" in checks["warehouse.feature_tables"].fix
    assert checks["feast.registry"].status == "warn"
    assert "modelsvc materialize" in checks["feast.registry"].fix
    assert checks["mlflow.registry"].status == "skip"
    assert checks["ray"].status == "ok" and checks["ray"].detail.startswith("local Ray")
    # doctor only reads: it created nothing
    assert not (workdir / "data").exists()
    with pytest.raises(ServiceUnavailableError, match=r"^2 of 9 checks failed: warehouse.engine, "
                                                      r"warehouse.raw_events$") as exc:
        report.raise_if_failed()
    assert exc.value.exit_code == 69


def test_local_partitions_are_found(settings, workdir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for table, days in {"raw_events": ["2026-01-01", "2026-01-02"], "user_features_precomputed": ["2026-01-01"],
                        "user_realtime_features": ["2026-01-02"]}.items():
        for ds in days:
            folder = workdir / "data" / "warehouse" / table / f"ds={ds}"
            folder.mkdir(parents=True)
            pq.write_table(pa.table({"x": [1]}), folder / "part-0.parquet")
    (workdir / "data" / "warehouse" / "raw_events" / "ds=2026-01-03").mkdir()  # empty: not a partition
    checks = _by_name(check_all(settings))
    assert checks["warehouse.engine"].status == "ok"
    assert checks["warehouse.raw_events"].detail == "raw_events: 2 partitions (2026-01-01..2026-01-02)"
    assert checks["warehouse.feature_tables"].status == "ok"


def test_missing_feast_repo_fails(workdir):
    settings = load_settings(workdir / "configs", features={"repo_path": str(workdir / "nope")})
    check = _by_name(check_all(settings))["feast.repo"]
    assert check.status == "fail"
    assert check.detail == f"Feast repo {workdir / 'nope'} does not exist"
    assert "features.repo_path" in check.fix


def test_unreachable_backends_fail_fast_with_fixes(workdir):
    closed = _closed_port()
    settings = load_settings(
        workdir / "configs",
        features={"online_store": "redis", "redis": {"port": closed, "password": "hunter2-secret"}},
        mlflow={"tracking_uri": f"http://user:pw-secret@127.0.0.1:{closed}"},
        ray={"address": f"127.0.0.1:{closed}"},
    )
    t0 = time.monotonic()
    report = check_all(settings, timeout_s=10)
    assert time.monotonic() - t0 < 8
    checks = _by_name(report)
    for name in ("feast.online_store", "mlflow.tracking", "mlflow.registry", "ray"):
        assert checks[name].status == "fail", name
        assert checks[name].fix, name
    assert checks["feast.online_store"].detail.startswith(f"Redis at localhost:{closed}:")
    assert checks["ray"].detail.startswith(f"Ray cluster at 127.0.0.1:{closed} is unreachable")
    assert "unreachable" in checks["mlflow.tracking"].detail
    dumped = report.model_dump_json()
    assert "hunter2-secret" not in dumped and "pw-secret" not in dumped
    assert "**********" in report.tracking_uri


def test_a_hanging_server_is_cut_off_by_the_timeout(workdir):
    # a listener that accepts connections but never answers: the HTTP probe must give up, not hang
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        port = srv.getsockname()[1]
        settings = load_settings(workdir / "configs", mlflow={"tracking_uri": f"http://127.0.0.1:{port}"})
        t0 = time.monotonic()
        checks = _by_name(check_all(settings, timeout_s=2))
        elapsed = time.monotonic() - t0
    assert elapsed < 4
    assert checks["mlflow.tracking"].status == "fail"
    assert checks["mlflow.registry"].status == "fail"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_feast_file_registry_is_read_without_feast(settings, workdir):
    feast_dir = workdir / "data" / "feast"
    feast_dir.mkdir(parents=True)
    # a Registry message: two entities (field 1), one feature view (6), one feature service (7), a version id (4)
    blob = b"\x0a\x02ab" * 2 + b"\x32\x03xyz" + b"\x3a\x00" + b"\x22\x021a" + b"\x28\x96\x01"
    (feast_dir / "registry.db").write_bytes(blob)
    check = _by_name(check_all(settings))["feast.registry"]
    assert check.status == "ok"
    assert check.detail.endswith("registry.db: 1 feature views, 1 feature services, 2 entities")
    (feast_dir / "registry.db").write_bytes(b"\x0a\x09short")
    check = _by_name(check_all(settings))["feast.registry"]
    assert check.status == "fail"
    assert check.detail.endswith("is not a readable Feast registry (truncated field)")


@pytest.mark.slow
def test_existing_local_mlflow_store_is_queried(settings, workdir):
    from modelsvc.tracking import mlflow_client

    mlflow_client(settings).create_registered_model(settings.mlflow.registered_model)
    checks = _by_name(check_all(settings, timeout_s=120))
    assert checks["mlflow.tracking"].status == "ok"
    assert checks["mlflow.registry"].status == "ok"
    assert checks["mlflow.registry"].detail == "1 registered models; 'ctr_model': no 'production' alias yet"


def test_credentials_in_the_tracking_uri_are_sent_as_basic_auth_and_never_shown(workdir):
    """http://user:pw@host:port is what MLflow's client accepts: doctor reaches the server the same way (it
    reported 'Name or service not known'), and the password appears nowhere in its report."""
    import base64
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    expected = "Basic " + base64.b64encode(b"alice:p@ss w-secret").decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.end_headers()
                return
            body = b"OK" if self.path == "/health" else json.dumps({"registered_models": []}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        uri = f"http://alice:p%40ss%20w-secret@127.0.0.1:{server.server_address[1]}"
        report = check_all(load_settings(workdir / "configs", mlflow={"tracking_uri": uri}), timeout_s=10)
    finally:
        server.shutdown()
        server.server_close()
    checks = _by_name(report)
    assert checks["mlflow.tracking"].status == "ok", checks["mlflow.tracking"].detail
    assert checks["mlflow.tracking"].detail == (
        f"server http://alice:**********@127.0.0.1:{server.server_address[1]}: /health OK")
    assert checks["mlflow.registry"].status == "ok", checks["mlflow.registry"].detail
    assert "secret" not in report.model_dump_json()
