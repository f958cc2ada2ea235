"""Shared fixtures. Real services are started once per session by the plugins in tests/fixtures/."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.s3",  # first: the MLflow and Ray fixtures import it (S3 variants)
    "tests.fixtures.hive",
    "tests.fixtures.redis",
    "tests.fixtures.mlflow_server",
    "tests.fixtures.ray_cluster",
    "tests.fixtures.prefect",
]

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIGS = REPO_ROOT / "configs"


_ISOLATED_ENV = ("MODELSVC_", "MLFLOW_TRACKING", "MLFLOW_REGISTRY_URI", "RAY_ADDRESS")


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears the session fixtures down on Ctrl-C or pytest.exit
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """The shared servers were signalled by their fixtures' teardowns; wait for them all together here."""
    from tests.fixtures._service import end_stopping

    end_stopping()


def _strip_isolated_env() -> None:
    for key in [k for k in os.environ if k.startswith(_ISOLATED_ENV)]:
        del os.environ[key]


@pytest.fixture(scope="session", autouse=True)
def _isolated_session_env() -> Iterator[None]:
    """No test and no fixture (module-scoped ones included, built before any test's own fixtures) sees the
    developer's MODELSVC_/MLFLOW_/RAY_ variables; they come back at the end of the session."""
    saved = {k: v for k, v in os.environ.items() if k.startswith(_ISOLATED_ENV)}
    _strip_isolated_env()
    yield
    _strip_isolated_env()
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _isolated_env() -> Iterator[None]:
    """Nor what an earlier test left behind: a variable set without monkeypatch (``mlflow.set_tracking_uri``
    writes MLFLOW_TRACKING_URI) would otherwise reach the next module's fixtures, which then use another store."""
    _strip_isolated_env()
    yield
    _strip_isolated_env()


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
