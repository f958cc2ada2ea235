"""``modelsvc materialize`` and ``modelsvc build-dataset`` through the CLI: --json, exit codes, error lines."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from tests.feature_data import random_case, write_impressions, write_offline, write_realtime

runner = CliRunner()


@pytest.fixture
def tables(workdir):
    off, rt, imp = random_case(5, users=10, days=4, impressions=150)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    write_impressions(root, imp)
    return imp


@pytest.mark.slow
def test_materialize_then_build_dataset_json(workdir, tables):
    result = runner.invoke(app, ["materialize", "--end-date", "2026-01-05T00:00:00", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["end"] == "2026-01-05T00:00:00Z"
    assert [v["view"] for v in report["views"]] == ["user_offline_features", "user_realtime_features"]
    assert report["rows"] == sum(v["rows"] for v in report["views"]) > 0

    days = tables["event_timestamp"].dt.strftime("%Y-%m-%d")
    result = runner.invoke(app, ["build-dataset", "--start-date", days.min(), "--end-date", days.max(),
                                 "--name", "cli_ds", "--json"])
    assert result.exit_code == 0, result.output
    manifest = json.loads(result.stdout)
    assert manifest["name"] == "cli_ds"
    assert manifest["rows"] == len(tables)
    assert sum(s["rows"] for s in manifest["splits"].values()) == len(tables)
    folder = workdir / "data" / "datasets" / "cli_ds" / manifest["version"]
    written = sorted(["manifest.json", *(f["path"] for f in manifest["files"])])
    assert sorted(p.name for p in folder.iterdir()) == written

    # human output: a table per split and the manifest
    result = runner.invoke(app, ["build-dataset", "--start-date", days.min(), "--end-date", days.max(),
                                 "--name", "cli_ds"])
    assert result.exit_code == 0, result.output
    assert "Dataset cli_ds/" in result.stdout
    assert manifest["fingerprint"] in result.stdout


@pytest.mark.parametrize(("args", "code", "error"), [
    (["build-dataset", "--start-date", "nope", "--end-date", "2026-01-02"], 64,
     "Error: --start-date: 'nope' is not a date (expected YYYY-MM-DD)"),
    (["build-dataset", "--start-date", "2026-01-05", "--end-date", "2026-01-01"], 64,
     "Error: --end-date 2026-01-01 is before --start-date 2026-01-05"),
    (["build-dataset", "--start-date", "2026-01-01", "--end-date", "2026-01-02", "--name", "no way"], 64,
     "Error: dataset name 'no way' is not a valid identifier (letters, digits and _ only)"),
    (["materialize", "--end-date", "yesterday"], 64,
     "Error: --end-date: 'yesterday' is not a timestamp (expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"),
])
def test_usage_errors(workdir, args, code, error):
    result = runner.invoke(app, args)
    assert result.exit_code == code, result.output
    assert result.stderr.strip().splitlines()[0] == error
    assert result.stdout == ""


def test_build_dataset_without_raw_events(workdir):
    result = runner.invoke(app, ["build-dataset", "--start-date", "2026-01-01", "--end-date", "2026-01-02"])
    assert result.exit_code == 66, result.output
    warehouse = workdir / "data" / "warehouse"
    assert result.stderr.splitlines()[0] == f"Error: table 'raw_events' not found under {warehouse}"


@pytest.mark.slow
def test_missing_feature_tables(workdir):
    _, _, imp = random_case(5, users=5, days=2, impressions=30)
    write_impressions(workdir / "data", imp)
    warehouse = workdir / "data" / "warehouse"
    want = (f"Error: feature table 'user_features_precomputed' not found under {warehouse} "
            "(feature view user_offline_features); run: modelsvc etl")

    result = runner.invoke(app, ["build-dataset", "--start-date", "2026-01-01", "--end-date", "2026-01-03"])
    assert result.exit_code == 66, result.output
    assert result.stderr.splitlines()[0] == want

    result = runner.invoke(app, ["materialize", "--end-date", "2026-01-03", "--json"])
    assert result.exit_code == 66, result.output
    assert result.stderr.splitlines()[0] == want
    assert result.stdout == ""


def test_help_has_examples():
    for cmd, example in (("materialize", "modelsvc materialize --end-date"),
                         ("build-dataset", "modelsvc build-dataset --start-date")):
        result = runner.invoke(app, [cmd, "--help"])
        assert result.exit_code == 0
        assert example in result.stdout


@pytest.mark.slow
def test_materialize_from_another_folder_uses_the_project_folder(workdir, tables, monkeypatch):
    """Relative paths start at the project folder (the one holding --config), not the working directory:
    nothing is written where the command happens to run."""
    elsewhere = workdir / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    result = runner.invoke(app, ["materialize", "--config", str(workdir / "configs"), "--end-date", "2026-01-05",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] > 0
    assert list(elsewhere.iterdir()) == []
    assert (workdir / "data" / "feast" / "feature_store.yaml").is_file()
