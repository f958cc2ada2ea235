"""The service fixtures' helpers: skip on a developer machine but fail in CI, free ports, stopping our processes."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.fixtures._service import (
    end_stopping,
    free_port,
    port_open,
    start,
    stop,
    stop_at_session_end,
    unavailable,
    wait_until,
)


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


def test_servers_stopped_at_the_session_end_are_waited_for_together_then_killed_and_cleaned(tmp_path):
    """stop_at_session_end signals at once and returns; end_stopping waits for all of them within their own grace
    (together, not one after the other), SIGKILLs one that ignores SIGTERM, and runs every clean-up even when one
    raises, which it reports at the end."""
    polite = start([sys.executable, "-c", "import time; time.sleep(600)"], tmp_path / "polite.log")
    stubborn_code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\n"
                     "time.sleep(600)\n")
    stubborn = [start([sys.executable, "-c", stubborn_code], tmp_path / f"stubborn{i}.log") for i in range(2)]
    for i in range(2):
        wait_until(lambda i=i: "ready" in (tmp_path / f"stubborn{i}.log").read_text(), timeout=30,
                   what="the stubborn process", proc=stubborn[i])
    cleaned: list[str] = []

    def broken() -> None:
        cleaned.append("broken")
        raise OSError("clean-up failed")

    t0 = time.monotonic()
    stop_at_session_end(polite, then=lambda: cleaned.append("polite"))
    stop_at_session_end(*stubborn, grace=3, then=broken)
    stop_at_session_end(grace=0, then=lambda: cleaned.append("last"))
    assert time.monotonic() - t0 < 1  # nothing waited for yet
    with pytest.raises(OSError, match="clean-up failed"):
        end_stopping()
    assert 3 <= time.monotonic() - t0 < 5.5  # both stubborn ones within one 3 s grace, not one after the other
    assert polite.returncode == -15
    assert [p.returncode for p in stubborn] == [-9, -9]
    assert cleaned == ["polite", "broken", "last"]
    end_stopping()  # nothing left


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
