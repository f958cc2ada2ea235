"""evaluate / promote / rollback on the command line: exit codes, the Error line, --json on stdout."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.tracking import mlflow_client
from tests.registry_support import CONSTANT_COEF, fresh_mlflow_db, log_fake_run, make_dataset


@pytest.fixture
def env(settings):
    fresh_mlflow_db(settings)
    return settings, make_dataset(settings)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_evaluate_passing_run_exits_0_and_prints_the_report(env) -> None:
    settings, manifest = env
    run = log_fake_run(settings, manifest)
    result = invoke("evaluate", "--run-id", run, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "passed"
    assert report["run_id"] == run
    assert report["production"] is None
    table = invoke("evaluate", "--run-id", run)
    assert table.exit_code == 0
    assert "verdict: passed" in table.stdout
    assert "gate: no production model: only the absolute bounds apply" in table.stdout
    assert "AUC by slice" in table.stdout
    assert "Demo oracle" in table.stdout


def test_evaluate_refused_run_prints_the_report_then_exits_1(env) -> None:
    settings, manifest = env
    run = log_fake_run(settings, manifest, CONSTANT_COEF)
    result = invoke("evaluate", "--run-id", run, "--json")
    assert result.exit_code == 1
    assert json.loads(result.stdout)["verdict"] == "refused"
    assert result.stderr.splitlines() == [
        f"Error: gate refused run {run}: auc 0.5000 outside >= 0.6000 (gate.min_auc); "
        "calibration_error 0.1217 outside <= 0.0500 (gate.max_calibration_error)"]
    table = invoke("evaluate", "--run-id", run)
    assert table.exit_code == 1
    assert "verdict: refused" in table.stdout
    assert "FAIL" in table.stdout


def test_evaluate_unknown_run_and_run_without_dataset_tags(env) -> None:
    settings, _ = env
    result = invoke("evaluate", "--run-id", "deadbeef")
    assert result.exit_code == 66
    assert result.stderr.splitlines()[0] == "Error: MLflow run 'deadbeef' not found"
    untagged = log_fake_run(settings, None)
    result = invoke("evaluate", "--run-id", untagged)
    assert result.exit_code == 64
    assert result.stderr.splitlines()[0] == (
        f"Error: run {untagged} has no modelsvc.dataset.name/modelsvc.dataset.version tags; pass --dataset NAME")
    result = invoke("evaluate", "--run-id", untagged, "--dataset", "ctr_training", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["dataset"] == "ctr_training"
    mlflow_client(settings).delete_run(untagged)
    for command in ("evaluate", "promote"):
        result = invoke(command, "--run-id", untagged)
        assert result.exit_code == 66
        assert result.stderr.splitlines()[0] == f"Error: MLflow run '{untagged}' is deleted"


def test_promote_and_rollback_exit_codes_and_json(env) -> None:
    settings, manifest = env
    run = log_fake_run(settings, manifest)

    result = invoke("promote", "--run-id", run)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"Error: run {run} has no evaluation; promote needs a passed evaluation",
        f"Hint: modelsvc evaluate --run-id {run}, or modelsvc promote --run-id {run} --force --reason TEXT"]

    result = invoke("promote", "--run-id", run, "--force")
    assert result.exit_code == 64
    assert result.stderr.splitlines() == ["Error: --force needs --reason TEXT (say why the gate is bypassed)"]

    result = invoke("rollback")
    assert result.exit_code == 66
    assert result.stderr.splitlines() == [
        "Error: registered model 'ctr_model' has no 'production' alias: nothing to roll back"]

    assert invoke("evaluate", "--run-id", run).exit_code == 0
    result = invoke("promote", "--run-id", run, "--json")
    assert result.exit_code == 0, result.stderr
    promotion = json.loads(result.stdout)
    assert (promotion["action"], promotion["version"], promotion["changed"]) == ("promote", "1", True)
    assert promotion["model_uri"] == "models:/ctr_model@production"
    assert "Registered model" not in result.stderr
    assert "Created version" not in result.stderr

    again = invoke("promote", "--run-id", run)
    assert again.exit_code == 0
    assert "nothing changed: version 1 is already in production" in again.stdout

    result = invoke("rollback", "--json")
    assert result.exit_code == 66
    assert result.stderr.splitlines() == [
        "Error: nothing to roll back to: version 1 of 'ctr_model' replaced no earlier version"]
    assert result.stdout == ""

    forced = log_fake_run(settings, manifest, CONSTANT_COEF)
    result = invoke("promote", "--run-id", forced, "--force", "--reason", "incident 42", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["forced"] is True
    result = invoke("rollback", "--reason", "undo the forced one", "--json")
    assert result.exit_code == 0
    back = json.loads(result.stdout)
    assert (back["action"], back["version"], back["previous_version"]) == ("rollback", "1", "2")
    assert back["reason"] == "undo the forced one"


@pytest.mark.parametrize("command", ["evaluate", "promote", "rollback"])
def test_help_has_an_example(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert f"Example: modelsvc {command}" in result.stdout


def test_cli_does_not_import_mlflow() -> None:
    code = ("import sys; import modelsvc.cli.registry; "
            "bad = [m for m in ('mlflow', 'torch', 'ray', 'feast', 'pyhive') if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
