"""`modelsvc run`: the failing step is named and its exit code returned; bad input fails before any step."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from modelsvc.cli import app

runner = CliRunner()


def test_reversed_range_is_a_usage_error(workdir):
    result = runner.invoke(app, ["run", "--start-date", "2025-01-10", "--end-date", "2025-01-01"])
    assert result.exit_code == 64
    assert result.stderr.strip().splitlines()[-1] == "Error: --end-date 2025-01-01 is before --start-date 2025-01-10"


def test_bad_date_is_a_usage_error(workdir):
    result = runner.invoke(app, ["run", "--start-date", "2025-13-01", "--end-date", "2025-01-01"])
    assert result.exit_code == 64
    assert "--start-date: '2025-13-01' is not a date" in result.stderr


def test_missing_raw_data_names_the_etl_step(workdir):
    result = runner.invoke(app, ["run", "--start-date", "2025-01-01", "--end-date", "2025-01-02", "--json"])
    report = json.loads(result.stdout)
    assert report["failed_step"] == "etl"
    assert result.exit_code == report["exit_code"] != 0
    assert [s["status"] for s in report["steps"]] == ["failed"] + ["skipped"] * 5
    assert result.stderr.strip().splitlines()[-1].startswith("Error: step 'etl' failed: ")


def test_bad_config_exits_78(workdir):
    (workdir / "configs" / "model_params.yaml").write_text("training:\n  epochs: 0\n")
    result = runner.invoke(app, ["run", "--start-date", "2025-01-01", "--end-date", "2025-01-01"])
    assert result.exit_code == 78
    assert "training.epochs" in result.stderr
    assert "model_params.yaml" in result.stderr
