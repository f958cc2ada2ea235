"""evaluate → promote → promote → rollback on a real local MLflow (SQLite) with real pyfunc models and a small
dataset + demo oracle table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from modelsvc.errors import GateRefusedError, ModelsvcError
from modelsvc.evaluation import evaluate, read_report
from modelsvc.registry import promote, rollback
from modelsvc.tracking import mlflow_client
from tests.registry_support import (
    CONSTANT_COEF,
    TRUE_COEF,
    fresh_mlflow_db,
    log_fake_run,
    logistic_p,
    make_dataset,
    make_frame,
)

pytestmark = pytest.mark.integration
NAME = "ctr_model"
SECOND_COEF = {"bias": -1.95, "orders": 0.48, "views": 0.16, "web": -0.38}  # as good as TRUE_COEF on this data
WEAK_COEF = {"bias": -1.55, "orders": 0.5, "views": 0.0, "web": 0.0}  # AUC ~0.026 below TRUE_COEF
CLI = "import sys; from modelsvc.cli import main; sys.argv[0] = 'modelsvc'; main()"


@pytest.fixture
def env(settings):
    fresh_mlflow_db(settings)
    return settings, make_dataset(settings)


def _production_predictions(settings) -> np.ndarray:
    import mlflow

    mlflow_client(settings)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@production")
    frame = make_frame().head(50)
    return model.predict(frame.drop(columns=["is_clicked", "p_true"]))["p_click"].to_numpy()


def test_evaluate_promote_second_candidate_rollback(env) -> None:
    settings, manifest = env
    first = log_fake_run(settings, manifest, TRUE_COEF)

    report = evaluate(settings, run_id=first)
    assert report.verdict == "passed"
    assert report.production is None
    assert report.gate.note == "no production model: only the absolute bounds apply"
    assert (report.dataset, report.dataset_version, report.rows) == (manifest.name, manifest.version, 3000)
    assert set(report.candidate.slices) == {"android", "ios", "web", "missing"}
    # the candidate is the generator's own model: no gap to the oracle
    assert report.oracle is not None
    assert report.oracle.rows == 3000
    assert report.oracle.gap == pytest.approx(0.0, abs=1e-12)
    run = mlflow_client(settings).get_run(first)
    assert run.data.tags["modelsvc.eval.verdict"] == "passed"
    assert run.data.tags["modelsvc.eval.dataset_fingerprint"] == manifest.fingerprint
    assert run.data.tags["modelsvc.eval.production_version"] == "none"
    assert run.data.metrics["eval_auc"] == pytest.approx(report.candidate.auc)
    assert read_report(settings, first) == report
    assert (settings.paths.resolve("reports") / "evaluation" / f"{first}.json").is_file()

    p1 = promote(settings, run_id=first)
    assert (p1.version, p1.changed) == ("1", True)
    np.testing.assert_allclose(_production_predictions(settings), logistic_p(make_frame().head(50), TRUE_COEF))

    second = log_fake_run(settings, manifest, SECOND_COEF)
    report2 = evaluate(settings, run_id=second)
    assert report2.verdict == "passed"
    assert report2.production_version == "1"
    assert report2.gate.compared_to_production
    assert report2.production is not None
    assert report2.production.auc == pytest.approx(report.candidate.auc)
    p2 = promote(settings, run_id=second)
    assert (p2.version, p2.previous_version) == ("2", "1")
    np.testing.assert_allclose(_production_predictions(settings), logistic_p(make_frame().head(50), SECOND_COEF))

    back = rollback(settings, reason="test")
    assert (back.version, back.previous_version, back.run_id) == ("1", "2", first)
    np.testing.assert_allclose(_production_predictions(settings), logistic_p(make_frame().head(50), TRUE_COEF))


def test_gate_refusals_are_recorded_and_block_promotion(env) -> None:
    settings, manifest = env
    constant = log_fake_run(settings, manifest, CONSTANT_COEF)
    report = evaluate(settings, run_id=constant)
    assert report.verdict == "refused"
    assert {c.name for c in report.gate.failures()} == {"min_auc", "max_calibration_error"}
    assert mlflow_client(settings).get_run(constant).data.tags["modelsvc.eval.verdict"] == "refused"
    with pytest.raises(GateRefusedError, match=f"^run {constant} has a 'refused' evaluation verdict"):
        promote(settings, run_id=constant)

    unevaluated = log_fake_run(settings, manifest, TRUE_COEF)
    with pytest.raises(GateRefusedError, match=f"^run {unevaluated} has no evaluation"):
        promote(settings, run_id=unevaluated)

    # do no harm: a weaker model passes the absolute bounds but not the comparison with production
    good = log_fake_run(settings, manifest, TRUE_COEF)
    evaluate(settings, run_id=good)
    promote(settings, run_id=good)
    weak = log_fake_run(settings, manifest, WEAK_COEF)
    report = evaluate(settings, run_id=weak)
    assert report.verdict == "refused"
    assert [c.name for c in report.gate.failures()] == ["auc_vs_production"]


def test_promote_same_run_twice_gives_one_version(env) -> None:
    settings, manifest = env
    run = log_fake_run(settings, manifest)
    evaluate(settings, run_id=run)
    assert promote(settings, run_id=run).changed
    assert not promote(settings, run_id=run).changed
    versions = mlflow_client(settings).search_model_versions(f"name='{NAME}'")
    assert [int(v.version) for v in versions] == [1]


def test_evaluate_refuses_a_dataset_changed_since_training(env) -> None:
    settings, manifest = env
    run = log_fake_run(settings, manifest, extra_tags={"modelsvc.dataset.fingerprint": "something-else"})
    with pytest.raises(ModelsvcError, match=r"changed since run .* was trained on it") as exc:
        evaluate(settings, run_id=run)
    assert exc.value.exit_code == 65


def _two_candidates(settings, manifest) -> tuple[str, str]:
    base = log_fake_run(settings, manifest, TRUE_COEF)
    evaluate(settings, run_id=base)
    promote(settings, run_id=base)
    a, b = log_fake_run(settings, manifest, SECOND_COEF), log_fake_run(settings, manifest, TRUE_COEF)
    evaluate(settings, run_id=a)
    evaluate(settings, run_id=b)
    return a, b


def _assert_one_winner(settings, winners: list[str], a: str, b: str) -> None:
    client = mlflow_client(settings)
    prod = client.get_model_version_by_alias(NAME, "production")
    assert len(winners) == 1
    assert prod.run_id == winners[0]
    assert client.get_run(prod.run_id).data.tags["modelsvc.eval.verdict"] == "passed"
    assert prod.tags["modelsvc.previous_version"] == "1"
    # the loser was refused before registering anything; no lock left behind
    assert sorted(int(v.version) for v in client.search_model_versions(f"name='{NAME}'")) == [1, 2]
    assert client.search_registered_models(f"name='{NAME}.modelsvc-lock'") == []


@pytest.mark.slow
def test_racing_promotions_in_threads_leave_one_evaluated_version(env) -> None:
    settings, manifest = env
    a, b = _two_candidates(settings, manifest)
    outcome: dict[str, object] = {}
    start = threading.Barrier(2)

    def go(run_id: str) -> None:
        start.wait()
        try:
            outcome[run_id] = promote(settings, run_id=run_id)
        except ModelsvcError as exc:
            outcome[run_id] = exc

    threads = [threading.Thread(target=go, args=(r,)) for r in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [r for r, o in outcome.items() if not isinstance(o, Exception)]
    losers = [o for o in outcome.values() if isinstance(o, Exception)]
    assert len(losers) == 1
    assert isinstance(losers[0], GateRefusedError)
    assert "production is now version 2" in str(losers[0])
    _assert_one_winner(settings, winners, a, b)


@pytest.mark.slow
def test_racing_promotions_in_two_processes_leave_one_evaluated_version(env, workdir: Path) -> None:
    settings, manifest = env
    a, b = _two_candidates(settings, manifest)
    procs = {r: subprocess.Popen([sys.executable, "-c", CLI, "promote", "--run-id", r, "--json"],
                                 cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (a, b)}
    results = {r: (p.wait(120), p.stdout.read(), p.stderr.read()) for r, p in procs.items()}
    codes = sorted(code for code, _, _ in results.values())
    assert codes == [0, 1], results
    winners = [r for r, (code, out, _) in results.items() if code == 0]
    assert json.loads(results[winners[0]][1])["version"] == "2"
    loser_err = next(err for code, _, err in results.values() if code == 1)
    assert "Error: run " in loser_err
    assert "production is now version 2" in loser_err
    _assert_one_winner(settings, winners, a, b)
