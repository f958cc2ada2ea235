"""CLI: serve, predict, score (exit codes and error lines that need no service; the working paths are in
tests/integration/test_serving.py)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app

runner = CliRunner()


def test_score_refuses_a_bad_range_before_any_work(workdir):
    res = runner.invoke(app, ["score", "--start-date", "2025-02-30"])
    assert res.exit_code == 64, res.output
    assert "Error: --start-date: '2025-02-30' is not a date" in res.output
    res = runner.invoke(app, ["score", "--start-date", "2025-03-02", "--end-date", "2025-03-01"])
    assert res.exit_code == 64, res.output
    assert res.output.startswith("Error: "), res.output


def test_predict_needs_users_and_a_valid_run_id(workdir):
    assert runner.invoke(app, ["predict"]).exit_code == 64  # --user-id is required: a usage error
    res = runner.invoke(app, ["predict", "--user-id", "1", "--run-id", "../etc"])
    assert res.exit_code == 64, res.output
    assert "Error: --run-id '../etc' is not an MLflow run id" in res.output


@pytest.mark.slow  # creates the local MLflow store (migrations: seconds)
def test_predict_without_a_production_alias_says_so(workdir):
    res = runner.invoke(app, ["predict", "--user-id", "1"])
    assert res.exit_code == 66, res.output
    assert "Error: registered model 'ctr_model' has no 'production' alias: nothing to serve" in res.output


@pytest.mark.parametrize("args", [["--port", "0"], ["--port", "70000"], ["--workers", "0"]])
def test_serve_refuses_bad_options(workdir, args):
    res = runner.invoke(app, ["serve", *args])
    assert res.exit_code == 64, res.output  # a usage error: one line, no box
    assert res.output.startswith(f"Error: Invalid value for '{args[0]}'"), res.output
    assert len(res.output.splitlines()) == 1, res.output
