"""Shared fixtures. Real services are started once per session by the plugins in tests/fixtures/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.hive",
    "tests.fixtures.redis",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.ray_cluster",
    "tests.fixtures.prefect",
    "tests.fixtures.s3",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's MODELSVC_/MLFLOW_/RAY_ variables."""
    for key in list(os.environ):
        if key.startswith(("MODELSVC_", "MLFLOW_TRACKING", "RAY_ADDRESS")):
            monkeypatch.delenv(key, raising=False)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh working directory with the repo's configs and feature repo, state under ./data."""
    import shutil

    shutil.copytree(CONFIGS, tmp_path / "configs")
    if (REPO_ROOT / "feature_repo").is_dir():
        shutil.copytree(REPO_ROOT / "feature_repo", tmp_path / "feature_repo",
                        ignore=shutil.ignore_patterns("data", "__pycache__", "*.db"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings(workdir: Path):
    from modelsvc.config import load_settings

    return load_settings(workdir / "configs")
