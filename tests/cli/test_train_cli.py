"""The train command's errors and help (no Ray needed)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app


def test_train_without_a_dataset_names_the_missing_dataset(workdir):
    result = CliRunner().invoke(app, ["train", "--dataset", "nope"])
    assert result.exit_code == 66
    assert result.stderr.splitlines()[0] == f"Error: dataset 'nope' not found under {workdir / 'data' / 'datasets'}"


def test_train_with_a_missing_version_names_it(settings, workdir):
    from tests.datasets import write_synthetic_dataset

    write_synthetic_dataset(settings, rows=200, version="20260101T000000Z")
    result = CliRunner().invoke(app, ["train", "--version", "20991231T000000Z"])
    assert result.exit_code == 66
    assert result.stderr.splitlines()[0] == (
        "Error: dataset 'ctr_training' has no version '20991231T000000Z' (latest: 20260101T000000Z)")


def test_train_refuses_a_dataset_without_validation_rows(settings, workdir):
    import pandas as pd

    from tests.datasets import as_single_file, write_synthetic_dataset

    manifest, _ = write_synthetic_dataset(settings, rows=200)
    path = as_single_file(manifest)
    df = pd.read_parquet(path)
    df.loc[df["split"] == "validation", "split"] = "test"
    df.to_parquet(path, index=False)
    result = CliRunner().invoke(app, ["train", "--json"])
    assert result.exit_code == 65
    assert result.stderr.splitlines()[0] == (
        f"Error: dataset ctr_training/{manifest.version} has no validation rows (needed to stop early)")
    assert result.stdout == ""


def test_train_refuses_a_dataset_whose_label_is_not_0_or_1(settings, workdir):
    """A dataset written by another tool (or before the raw-event check) with is_clicked 2: 65, not a model."""
    import pandas as pd

    from tests.datasets import as_single_file, write_synthetic_dataset

    manifest, _ = write_synthetic_dataset(settings, rows=200)
    path = as_single_file(manifest)
    df = pd.read_parquet(path)
    df.loc[df.index[:7], "is_clicked"] = 2
    df.to_parquet(path, index=False)
    result = CliRunner().invoke(app, ["train", "--json"])
    assert result.exit_code == 65
    assert result.stderr.splitlines() == [
        f"Error: {path}: label 'is_clicked' has 7 value(s) other than 0 and 1 (e.g. 2)"]
    assert result.stdout == ""


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_train_with_a_weight_decay_that_is_not_finite_is_a_config_error(workdir, monkeypatch, value):
    monkeypatch.setenv("MODELSVC_TRAINING__WEIGHT_DECAY", value)
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 78
    assert result.stderr == (f"Error: environment MODELSVC_TRAINING__WEIGHT_DECAY: training.weight_decay: Input "
                             f"should be a finite number (got '{value}')\n")


def test_train_bad_config_value_is_a_config_error(workdir, monkeypatch):
    monkeypatch.setenv("MODELSVC_TRAINING__DATA_PATH", "gpu-magic")
    result = CliRunner().invoke(app, ["train"])
    assert result.exit_code == 78
    assert result.stderr.startswith("Error: environment MODELSVC_TRAINING__DATA_PATH: training.data_path")


def test_train_help_has_an_example():
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    assert "modelsvc train --dataset ctr_training" in result.output
