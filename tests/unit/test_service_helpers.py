"""The service fixtures' helpers: skip on a developer machine but fail in CI, free ports, stopping our processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.fixtures._service import free_port, port_open, start, stop, unavailable, wait_until


def test_missing_service_skips_locally(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^redis-server binary not found$"):
        unavailable("redis-server binary not found")


@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_missing_service_fails_in_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match=r"^redis-server binary not found \(CI is set"):
        unavailable("redis-server binary not found")


def test_start_wait_and_stop_a_process_group(tmp_path):
    port = free_port()
    assert not port_open("127.0.0.1", port)
    log = tmp_path / "server.log"
    # a parent that starts a child listener: stop() must take down the whole group
    code = ("import socket, subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
            "print(child.pid, flush=True)\n"
            f"s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen()\n"
            "time.sleep(600)\n")
    proc = start([sys.executable, "-c", code], log)
    wait_until(lambda: port_open("127.0.0.1", port), timeout=30, what="listener", proc=proc, log=log)
    child_pid = int(log.read_text().split()[0])
    t0 = time.monotonic()
    stop(proc, grace=5)
    assert time.monotonic() - t0 < 10
    assert proc.poll() is not None
    # SIGKILL is delivered asynchronously: the child is gone within moments, not necessarily at once
    wait_until(lambda: not _alive(child_pid), timeout=5, what="the child to die")
    assert not port_open("127.0.0.1", port)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting for init to reap it counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_wait_until_reports_a_dead_process_with_its_log(tmp_path):
    log = tmp_path / "x.log"
    proc = start([sys.executable, "-c", "print('boom: bad flag'); raise SystemExit(3)"], log)
    with pytest.raises(RuntimeError, match=r"(?s)demo exited with code 3 before it was ready.*boom: bad flag"):
        wait_until(lambda: False, timeout=30, what="demo", proc=proc, log=log)
