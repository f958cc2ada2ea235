"""``modelsvc config`` and ``modelsvc doctor`` through the CLI: output, --json, exit codes and error lines."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from modelsvc.cli import app

runner = CliRunner()


def test_config_human_output_is_yaml_of_the_resolved_settings(workdir):
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.stdout)
    assert data["warehouse"]["engine"] == "duckdb"
    assert data["resolved"]["root"] == str(workdir / "data")
    assert data["resolved"]["ray_address"] == "local"


def test_config_json_with_profile_env_and_masked_secret(workdir, monkeypatch):
    monkeypatch.setenv("MODELSVC_HIVE__PASSWORD", "not-for-your-eyes")
    monkeypatch.setenv("MODELSVC_TRAINING__EPOCHS", "3")
    result = runner.invoke(app, ["config", "--config", str(workdir / "configs"), "--profile", "production", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["profile"], data["warehouse"]["engine"], data["training"]["epochs"]) == ("production", "hive", 3)
    assert data["hive"]["password"] == "**********"
    assert "not-for-your-eyes" not in result.output


def test_config_dir_and_profile_from_the_environment(workdir, monkeypatch):
    workdir.joinpath("configs").rename(workdir / "conf")
    monkeypatch.setenv("MODELSVC_CONFIG_DIR", str(workdir / "conf"))
    monkeypatch.setenv("MODELSVC_PROFILE", "production")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["features"]["online_store"] == "redis"


def test_bad_config_exits_78_with_one_line(workdir):
    (workdir / "configs" / "model_params.yaml").write_text("training:\n  epochs: lots\n")
    result = runner.invoke(app, ["config", "--json"])
    assert result.exit_code == 78
    assert result.stdout == ""
    assert result.stderr == ("Error: configs/model_params.yaml: training.epochs: Input should be a valid integer, "
                             "unable to parse string as an integer (got 'lots')\n")


def test_missing_config_dir_exits_78(workdir):
    result = runner.invoke(app, ["config", "--config", "nope"])
    assert result.exit_code == 78
    assert result.stderr == "Error: config directory 'nope' does not exist (pass --config DIR)\n"


def test_missing_profile_exits_78(workdir):
    result = runner.invoke(app, ["config", "--profile", "staging"])
    assert result.exit_code == 78
    assert result.stderr == ("Error: profile 'staging' not found: no configs/profiles/staging.yaml "
                             "(available: production)\n")


def test_bad_env_var_exits_78_naming_the_variable(workdir, monkeypatch):
    monkeypatch.setenv("MODELSVC_WAREHOUSE__ENGINE", "spark")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 78
    assert result.stderr == ("Error: environment MODELSVC_WAREHOUSE__ENGINE: warehouse.engine: Input should be "
                             "'duckdb' or 'hive' (got 'spark')\n")


def test_verbose_shows_the_traceback(workdir):
    result = runner.invoke(app, ["-v", "config", "--config", "nope"])
    assert result.exit_code == 78
    assert "Traceback" in result.stderr
    assert result.stderr.rstrip().endswith("Error: config directory 'nope' does not exist (pass --config DIR)")


# -- doctor -------------------------------------------------------------------------------------------------

def test_doctor_on_a_fresh_workdir_exits_69_with_fixes(workdir):
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 69
    assert result.stderr == "Error: 2 of 9 checks failed: warehouse.engine, warehouse.raw_events\n"
    for name in ("warehouse.engine", "warehouse.raw_events", "feast.repo", "mlflow.tracking", "ray"):
        assert name in result.stdout
    assert "FAIL" in result.stdout


def test_doctor_json_is_clean_json_on_stdout(workdir):
    result = runner.invoke(app, ["doctor", "--json", "--timeout", "5"])
    assert result.exit_code == 69
    data = json.loads(result.stdout)
    assert data["ok"] is False
    failed = {c["name"]: c for c in data["checks"] if c["status"] == "fail"}
    assert set(failed) == {"warehouse.engine", "warehouse.raw_events"}
    assert all(c["fix"] for c in failed.values())


def test_doctor_bad_config_exits_78(workdir):
    result = runner.invoke(app, ["doctor", "--profile", "nope"])
    assert result.exit_code == 78
    assert result.stderr.startswith("Error: profile 'nope' not found")


def test_doctor_rejects_a_zero_timeout(workdir):
    result = runner.invoke(app, ["doctor", "--timeout", "0"])
    assert result.exit_code == 64
    assert "--timeout" in result.stderr


def test_config_dir_that_is_a_file_and_data_root_that_is_a_file(workdir, monkeypatch):
    (workdir / "afile").write_text("x\n")
    result = runner.invoke(app, ["etl", "--config", "afile"])
    assert result.exit_code == 78
    assert result.stderr == "Error: config directory 'afile' is a file, not a directory (pass --config DIR)\n"
    monkeypatch.setenv("MODELSVC_PATHS__ROOT", "afile")
    result = runner.invoke(app, ["etl", "--start-date", "2025-01-01"])
    assert result.exit_code == 78
    assert result.stderr == (f"Error: environment MODELSVC_PATHS__ROOT: paths.root: '{workdir / 'afile'}' is a "
                             "file, not a folder\n")


def test_non_finite_float_and_yaml_password_exit_78(workdir, monkeypatch):
    monkeypatch.setenv("MODELSVC_TRAINING__WEIGHT_DECAY", "inf")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 78
    assert result.stderr == ("Error: environment MODELSVC_TRAINING__WEIGHT_DECAY: training.weight_decay: Input "
                             "should be a finite number (got 'inf')\n")
    monkeypatch.delenv("MODELSVC_TRAINING__WEIGHT_DECAY")
    (workdir / ".env").write_text("MODELSVC_HIVE__PORT=x\n")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 78
    assert result.stderr == ("Error: .env MODELSVC_HIVE__PORT: hive.port: Input should be a valid integer, unable "
                             "to parse string as an integer (got 'x')\n")
    (workdir / ".env").unlink()
    with (workdir / "configs" / "base.yaml").open("a") as f:
        f.write("mlflow:\n  password: hunter2\n")
    result = runner.invoke(app, ["config"])
    assert result.exit_code == 78
    assert result.stderr == ("Error: configs/base.yaml: mlflow.password: secrets are not read from YAML; set "
                             "MODELSVC_MLFLOW__PASSWORD in the environment or .env\n")
