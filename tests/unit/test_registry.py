"""Alias bookkeeping of promote / rollback on a real local MLflow (SQLite). Evaluations are faked by setting the
tags ``evaluate`` writes (tests/integration/test_registry.py runs the real evaluate)."""

from __future__ import annotations

import pytest

from modelsvc.errors import DataError, GateRefusedError, NotFoundError, RetryableError, UsageError
from modelsvc.registry import (
    LOCK_SUFFIX,
    LOCK_TOKEN_TAG,
    _declared_paths,
    promote,
    promotion_lock,
    rollback,
)
from modelsvc.tracking import mlflow_client
from tests.registry_support import fresh_mlflow_db, log_fake_run, mark_evaluated

NAME = "ctr_model"


@pytest.fixture
def settings(settings):
    fresh_mlflow_db(settings)
    return settings


def _alias(settings, alias: str) -> str | None:
    from modelsvc.tracking import alias_version

    mv = alias_version(mlflow_client(settings), NAME, alias)
    return None if mv is None else str(mv.version)


def _tags(settings, version: str) -> dict[str, str]:
    return dict(mlflow_client(settings).get_model_version(NAME, version).tags)


def test_promote_records_history_and_rollback_walks_it_back(settings) -> None:
    runs = [log_fake_run(settings, None) for _ in range(3)]
    mark_evaluated(settings, runs[0], against="none", auc=0.71)

    p1 = promote(settings, run_id=runs[0], actor="alice", reason="first model")
    assert (p1.version, p1.previous_version, p1.changed, p1.actor) == ("1", None, True, "alice")
    assert p1.metrics == {"eval_auc": 0.71} and "python_model.pkl" in p1.files
    t1 = _tags(settings, "1")
    assert t1["modelsvc.previous_version"] == "none" and t1["modelsvc.promoted_by"] == "alice"
    assert t1["modelsvc.promotion_reason"] == "first model" and t1["modelsvc.eval.auc"] == "0.71"
    assert t1["modelsvc.promotion_forced"] == "false" and t1["modelsvc.eval.verdict"] == "passed"
    assert _alias(settings, "production") == "1" and _alias(settings, "previous-production") is None

    mark_evaluated(settings, runs[1], against="1")
    assert promote(settings, run_id=runs[1]).previous_version == "1"
    mark_evaluated(settings, runs[2], against="2")
    p3 = promote(settings, run_id=runs[2])
    assert (p3.version, p3.previous_version) == ("3", "2")
    assert _alias(settings, "production") == "3" and _alias(settings, "previous-production") == "2"

    r1 = rollback(settings, actor="bob", reason="ctr dropped")
    assert (r1.action, r1.version, r1.previous_version, r1.run_id) == ("rollback", "2", "3", runs[1])
    assert _alias(settings, "production") == "2" and _alias(settings, "previous-production") == "1"
    t2 = _tags(settings, "2")
    assert t2["modelsvc.rolled_back_from"] == "3" and t2["modelsvc.rolled_back_by"] == "bob"
    assert t2["modelsvc.rollback_reason"] == "ctr dropped"
    assert "modelsvc.rolled_back_at" in _tags(settings, "3")

    assert rollback(settings).version == "1"
    assert _alias(settings, "production") == "1" and _alias(settings, "previous-production") is None
    with pytest.raises(NotFoundError, match=r"^nothing to roll back to: version 1 of 'ctr_model' replaced no "):
        rollback(settings)


def test_promoting_the_production_run_again_is_a_no_op(settings) -> None:
    run = log_fake_run(settings, None)
    mark_evaluated(settings, run)
    first = promote(settings, run_id=run)
    again = promote(settings, run_id=run)
    assert first.changed and not again.changed and again.version == first.version == "1"
    assert len(mlflow_client(settings).search_model_versions(f"name='{NAME}'")) == 1


def test_promote_refusals(settings) -> None:
    run = log_fake_run(settings, None)
    with pytest.raises(GateRefusedError, match=f"^run {run} has no evaluation; promote needs a passed evaluation$"):
        promote(settings, run_id=run)
    mark_evaluated(settings, run, verdict="refused")
    with pytest.raises(GateRefusedError, match="has a 'refused' evaluation verdict"):
        promote(settings, run_id=run)
    with pytest.raises(UsageError, match=r"^--force needs --reason TEXT"):
        promote(settings, run_id=run, force=True)
    with pytest.raises(UsageError, match="is not an MLflow run id"):
        promote(settings, run_id="x' or '1'='1")
    with pytest.raises(NotFoundError, match="^MLflow run '0123abcd' not found$"):
        promote(settings, run_id="0123abcd")
    # refused runs never got a version registered
    assert mlflow_client(settings).search_model_versions(f"name='{NAME}'") == []

    forced = promote(settings, run_id=run, force=True, reason="hotfix", actor="carol")
    assert forced.forced and forced.verdict == "refused"
    assert _tags(settings, forced.version)["modelsvc.promotion_forced"] == "true"


def test_promote_refuses_an_evaluation_against_another_production_version(settings) -> None:
    a, b, c = (log_fake_run(settings, None) for _ in range(3))
    mark_evaluated(settings, a, against="none")
    mark_evaluated(settings, b, against="none")  # evaluated before a went to production
    promote(settings, run_id=a)
    with pytest.raises(GateRefusedError, match=f"^run {b} was evaluated against production version none but "
                                               "production is now version 1; evaluate it again"):
        promote(settings, run_id=b)
    mark_evaluated(settings, c, against="1")
    assert promote(settings, run_id=c).version == "2"


def test_promote_refuses_an_incomplete_model_artifact(settings) -> None:
    run = log_fake_run(settings, None)
    mark_evaluated(settings, run)
    [pkl] = (settings.paths.resolve("mlflow") / "artifacts").rglob("python_model.pkl")
    pkl.unlink()
    with pytest.raises(DataError, match=r"^model models:/ctr_model/1 is incomplete: missing or empty python_model.pkl"):
        promote(settings, run_id=run)
    assert _alias(settings, "production") is None


def test_rollback_without_production_is_an_error(settings) -> None:
    mlflow_client(settings)
    with pytest.raises(NotFoundError, match="^registered model 'ctr_model' has no 'production' alias"):
        rollback(settings)


def test_declared_paths_cover_pyfunc_artifacts_env_and_flavor_data() -> None:
    flavors = {
        "python_function": {"python_model": "python_model.pkl", "code": None, "loader_module": "mlflow.pyfunc.model",
                            "env": {"conda": "conda.yaml", "virtualenv": "python_env.yaml"},
                            "artifacts": {"weights": {"path": "artifacts/w.pt", "uri": "/tmp/w.pt"}}},
        "pytorch": {"model_data": "data", "pytorch_version": "2.3"},
    }
    assert _declared_paths(flavors) == ["artifacts/w.pt", "conda.yaml", "data", "python_env.yaml",
                                        "python_model.pkl"]


def test_lock_is_exclusive_released_and_stale_locks_are_broken(settings) -> None:
    client = mlflow_client(settings)
    lock = NAME + LOCK_SUFFIX
    first = promotion_lock(client, NAME)
    token = first.__enter__()
    assert client.get_registered_model(lock).tags[LOCK_TOKEN_TAG] == token
    with pytest.raises(RetryableError, match=f"^another promotion holds the registry lock '{lock}'"), \
            promotion_lock(client, NAME, wait_s=0.3):
        pass
    # a lock older than the ttl is taken to be left by a crashed process and broken
    second = promotion_lock(client, NAME, wait_s=5, ttl_s=0.0)
    token2 = second.__enter__()
    assert token2 != token
    first.__exit__(None, None, None)  # the first holder must not release the second holder's lock
    assert client.get_registered_model(lock).tags[LOCK_TOKEN_TAG] == token2
    second.__exit__(None, None, None)
    assert client.search_registered_models(f"name='{lock}'") == []
    with promotion_lock(client, NAME, wait_s=0.3):
        pass
