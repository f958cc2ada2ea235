"""Exit statuses a scheduler can trust: usage 64, a bug 70 (traceback in a log file), storage 73/74, and the
interrupts: Ctrl-C 130 and SIGTERM 143, each with exactly one ``Error: interrupted`` line."""

from __future__ import annotations

import errno
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "line"), [
    (["etl", "--bogus"], "Error: No such option: --bogus (see: modelsvc etl --help)"),
    (["frob"], "Error: No such command 'frob'. (see: modelsvc --help)"),
    (["doctor", "--timeout", "0"],
     "Error: Invalid value for '--timeout': Input should be greater than or equal to 1 (see: modelsvc doctor --help)"),
    (["etl", "--start-date"], "Error: Option '--start-date' requires an argument."),
])
def test_usage_errors_exit_64_with_one_line(workdir, args, line):
    result = runner.invoke(app, args)
    assert result.exit_code == 64
    assert result.stderr.splitlines() == [line]
    assert result.stdout == ""


def test_an_unexpected_exception_exits_70_naming_the_log_with_the_traceback(workdir, monkeypatch):
    import modelsvc.etl

    def broken(*args, **kwargs):
        raise RuntimeError("a bug\nsecond line")

    monkeypatch.setattr(modelsvc.etl, "run_etl", broken)
    result = runner.invoke(app, ["etl", "--start-date", "2025-01-01"])
    assert result.exit_code == 70
    [line] = result.stderr.splitlines()
    match = re.fullmatch(r"Error: unexpected RuntimeError: a bug \(traceback in (.+)\)", line)
    assert match, line
    log = Path(match.group(1))
    assert log.parent == workdir / "data" / "logs"
    assert "Traceback (most recent call last)" in log.read_text()
    assert 'raise RuntimeError("a bug' in log.read_text()

    verbose = runner.invoke(app, ["-v", "etl", "--start-date", "2025-01-01"])
    assert verbose.exit_code == 70
    assert "Traceback (most recent call last)" in verbose.stderr
    assert verbose.stderr.splitlines()[-1].startswith("Error: unexpected RuntimeError: a bug (traceback in ")


def test_a_file_where_a_table_folder_should_be_exits_73(workdir):
    (workdir / "data" / "warehouse").mkdir(parents=True)
    (workdir / "data" / "warehouse" / "raw_events").write_text("not a folder")
    result = runner.invoke(app, ["demo-data", "--users", "20", "--days", "1"])
    assert result.exit_code == 73, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Error: cannot create ")
    assert str(workdir / "data" / "warehouse" / "raw_events") in lines[0]
    assert len(lines) == 2
    assert lines[1].startswith("Hint: ")


def test_disk_full_exits_74_and_publishes_nothing(workdir, monkeypatch):
    import pyarrow.parquet as pq

    real = pq.write_table
    calls = []

    def fill_up(table, where, *args, **kwargs):
        calls.append(where)
        if len(calls) > 1:  # the first partition is staged, the second finds the disk full
            raise OSError(errno.ENOSPC, "No space left on device", str(where))
        return real(table, where, *args, **kwargs)

    monkeypatch.setattr(pq, "write_table", fill_up)
    result = runner.invoke(app, ["demo-data", "--users", "20", "--days", "3"])
    assert result.exit_code == 74, result.output
    assert result.stderr.splitlines()[0].startswith("Error: no space left on the device (")
    raw = workdir / "data" / "warehouse" / "raw_events"
    assert not [p for p in raw.rglob("*.parquet")] if raw.exists() else True


def test_os_error_mapping():
    from modelsvc.errors import CannotCreateError, StorageError, from_os_error

    assert isinstance(from_os_error(OSError(errno.ENOSPC, "No space left on device", "/x")), StorageError)
    assert isinstance(from_os_error(OSError(errno.EDQUOT, "Disk quota exceeded")), StorageError)
    assert from_os_error(NotADirectoryError(errno.ENOTDIR, "Not a directory", "/x/y")).exit_code == 73
    assert isinstance(from_os_error(OSError("IOError: Cannot create directory '/x': Not a directory")),
                      CannotCreateError)
    assert from_os_error(OSError(errno.ECONNREFUSED, "refused")) is None
    assert from_os_error(ValueError("x")) is None


# -- real signals --------------------------------------------------------------------------------------------
_DUCKDB_HARNESS = textwrap.dedent("""
    import sys
    from modelsvc import cli, interrupts
    from modelsvc.config import load_settings
    from modelsvc.warehouse import open_warehouse

    def slow_query():
        with open_warehouse(load_settings(sys.argv[1])) as wh:
            print("ready", file=sys.stderr, flush=True)
            wh.query("select count(*) from range(100000000000) a")

    with interrupts.handling():
        code = cli._invoke(lambda: cli.run(slow_query))
    sys.exit(code)
""")


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_duckdb_query_is_one_line_and_128_plus_the_signal(workdir, tmp_path, sig, code):
    """DuckDB turns the interrupt into ``RuntimeError: Query interrupted``: still an interrupt, no traceback.
    A long query is stopped at once (DuckDB on its own noticed the signal only after up to a minute)."""
    err = tmp_path / "err.txt"
    with err.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-c", _DUCKDB_HARNESS, str(workdir / "configs")], stderr=f,
                                stdout=subprocess.PIPE)
        _wait_for(lambda: "ready" in err.read_text(), 30, "the query to start")
        time.sleep(1)
        proc.send_signal(sig)
        assert proc.wait(timeout=10) == code
    assert err.read_text().splitlines() == ["ready", "Error: interrupted"]


def _modelsvc() -> list[str]:
    script = Path(sys.executable).with_name("modelsvc")
    return [str(script)] if script.exists() else [sys.executable, "-c", "from modelsvc.cli import main; main()"]


def _ray_processes(tmpdir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(tmpdir).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupted_train_exits_with_one_line_kills_its_run_and_stops_ray(settings, workdir, tmp_path,
                                                                                sig, code):
    """Today: Ctrl-C exited 1 with an empty stderr (Ray's own SIGINT handler), SIGTERM 134 with Ray's stack dump
    (``ray.init`` installs ``sys.exit`` for SIGTERM)."""
    import os

    from tests.datasets import write_synthetic_dataset

    write_synthetic_dataset(settings, rows=400)
    ray_tmp = Path("/tmp") / f"msvc-ray-{os.getpid()}-{sig}"
    env = {**os.environ, "MODELSVC_TRAINING__EPOCHS": "1000", "MODELSVC_TRAINING__EARLY_STOPPING_PATIENCE": "1000",
           "MODELSVC_RAY__NUM_CPUS": "1", "RAY_TMPDIR": str(ray_tmp)}
    err = tmp_path / "err.txt"
    storage = workdir / "data" / "ray"
    with err.open("w") as f:
        proc = subprocess.Popen([*_modelsvc(), "train"], stderr=f, stdout=subprocess.DEVNULL, env=env,
                                cwd=workdir)
        try:
            _wait_for(lambda: any(storage.glob("*/modelsvc_run.json")) or proc.poll() is not None, 240,
                      "the training to start")
            time.sleep(4)  # inside Ray Train's fit
            assert proc.poll() is None, err.read_text()
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == code, err.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    assert err.read_text().splitlines()[-1] == "Error: interrupted"
    assert err.read_text().count("Error:") == 1
    assert "Traceback" not in err.read_text()

    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)
    [run] = client.search_runs([client.get_experiment_by_name(settings.mlflow.experiment).experiment_id])
    assert run.info.status == "KILLED"
    _wait_for(lambda: not _ray_processes(ray_tmp), 30, "the Ray processes modelsvc started to stop")


def _fake_ray_address(listening: bool):
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    if listening:
        server.listen()  # accepts TCP, never speaks Ray's protocol
    else:
        server.close()
    return server, f"127.0.0.1:{server.getsockname()[1] if listening else _closed_port(server)}"


def _closed_port(server) -> int:
    import socket

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.mark.timeout(120)
def test_train_on_an_unreachable_ray_address_exits_69(settings, workdir, monkeypatch):
    """Today train waits without end, printing GCS warnings; no MLflow run is created either."""
    from tests.datasets import write_synthetic_dataset

    write_synthetic_dataset(settings, rows=200)
    _server, address = _fake_ray_address(listening=False)
    monkeypatch.setenv("MODELSVC_RAY__ADDRESS", address)
    monkeypatch.setenv("MODELSVC_RAY__CONNECT_TIMEOUT_S", "5")
    result = runner.invoke(app, ["train"])
    assert result.exit_code == 69, result.output
    assert result.stderr.splitlines()[0].startswith(f"Error: Ray cluster at {address} is unreachable (")
    assert result.stderr.splitlines()[0].endswith("(ray.connect_timeout_s=5)")


@pytest.mark.timeout(60)
def test_a_silent_ray_address_fails_within_the_connect_timeout(settings, monkeypatch):
    from modelsvc.errors import ServiceUnavailableError
    from modelsvc.training.ray_runtime import require_ray_cluster

    server, address = _fake_ray_address(listening=True)
    monkeypatch.setenv("MODELSVC_RAY__ADDRESS", address)
    settings.ray.address = address
    settings.ray.connect_timeout_s = 6
    t0 = time.monotonic()
    try:
        with pytest.raises(ServiceUnavailableError, match=rf"Ray cluster at {address}: no answer within 6s"):
            require_ray_cluster(settings)
    finally:
        server.close()
    assert time.monotonic() - t0 < 6 + 1
