"""The Hive engine's failures through the CLI: exit codes and the ``Error:`` line (no server needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from tests.fixtures._service import free_port

runner = CliRunner()


@pytest.fixture
def hive_env(workdir, monkeypatch: pytest.MonkeyPatch) -> int:
    port = free_port()  # nothing listens there
    for key, value in {"WAREHOUSE__ENGINE": "hive", "HIVE__HOST": "127.0.0.1", "HIVE__PORT": str(port),
                       "HIVE__AUTH": "LDAP", "HIVE__USERNAME": "svc", "HIVE__PASSWORD": "s3cr3t-pw",
                       "HIVE__CONNECT_TIMEOUT_S": "2"}.items():
        monkeypatch.setenv(f"MODELSVC_{key}", value)
    return port


def test_etl_with_hive_unreachable_exits_69_naming_host_port(hive_env: int) -> None:
    result = runner.invoke(app, ["etl", "--start-date", "2024-01-01", "--end-date", "2024-01-02"])
    assert result.exit_code == 69
    assert result.stderr.splitlines()[0] == f"Error: cannot reach HiveServer2 at 127.0.0.1:{hive_env}: " \
                                            "connection refused"
    assert "s3cr3t" not in result.stderr
    assert "s3cr3t" not in result.stdout


def test_etl_with_a_bad_date_is_refused_before_connecting(hive_env: int) -> None:
    result = runner.invoke(app, ["etl", "--start-date", "2024-01-01'; DROP TABLE x; --"])
    assert result.exit_code == 64
    assert result.stderr.splitlines()[0] == \
        "Error: --start-date: '2024-01-01'; DROP TABLE x; --' is not a date (expected YYYY-MM-DD)"
