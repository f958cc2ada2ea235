"""The promotion gate: absolute bounds, do-no-harm against production, NaN / missing metrics, exact edges."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from modelsvc.config import GateSettings
from modelsvc.errors import GateRefusedError
from modelsvc.evaluation import EvalReport, ModelMetrics, check_gate

GATE = GateSettings(min_auc=0.6, max_log_loss=0.7, max_brier=0.25, max_calibration_error=0.05,
                    auc_tolerance=0.005, log_loss_tolerance=0.01)
GOOD = {"auc": 0.72, "log_loss": 0.55, "brier": 0.2, "calibration_error": 0.02}


def _failed(result) -> set[str]:
    return {c.name for c in result.failures()}


def test_good_candidate_without_production_passes_on_absolute_bounds_only() -> None:
    result = check_gate(GOOD, None, GATE)
    assert result.passed
    assert not result.compared_to_production
    assert result.note == "no production model: only the absolute bounds apply"
    assert [c.name for c in result.checks] == ["min_auc", "max_log_loss", "max_brier", "max_calibration_error"]


@pytest.mark.parametrize(("metric", "bad", "check"), [
    ("auc", 0.59, "min_auc"), ("log_loss", 0.71, "max_log_loss"), ("brier", 0.26, "max_brier"),
    ("calibration_error", 0.051, "max_calibration_error"),
])
def test_each_absolute_bound_refuses(metric: str, bad: float, check: str) -> None:
    result = check_gate({**GOOD, metric: bad}, None, GATE)
    assert not result.passed
    assert _failed(result) == {check}


def test_absolute_bounds_are_inclusive_at_the_exact_edge() -> None:
    edge = {"auc": 0.6, "log_loss": 0.7, "brier": 0.25, "calibration_error": 0.05}
    assert check_gate(edge, None, GATE).passed


@pytest.mark.parametrize("value", [float("nan"), None])
@pytest.mark.parametrize("metric", ["auc", "log_loss", "brier", "calibration_error"])
def test_nan_or_none_metric_fails(metric: str, value: float | None) -> None:
    result = check_gate({**GOOD, metric: value}, None, GATE)
    assert not result.passed
    failed = [c for c in result.failures()]
    assert len(failed) == 1
    assert failed[0].detail == f"{metric} is missing or NaN"


def test_missing_metric_key_fails() -> None:
    cand = {k: v for k, v in GOOD.items() if k != "brier"}
    assert _failed(check_gate(cand, None, GATE)) == {"max_brier"}


def test_do_no_harm_edges_exactly_at_the_tolerance_pass() -> None:
    prod = {"auc": 0.70, "log_loss": 0.60, "brier": 0.2, "calibration_error": 0.02}
    # exactly production - auc_tolerance and production + log_loss_tolerance: bounds are inclusive
    cand = {**GOOD, "auc": 0.695, "log_loss": 0.61}
    result = check_gate(cand, prod, GATE)
    assert result.passed
    assert result.compared_to_production
    assert result.note == "absolute bounds and do-no-harm against production"


def test_do_no_harm_just_beyond_the_tolerance_refuses() -> None:
    prod = {"auc": 0.70, "log_loss": 0.60}
    assert _failed(check_gate({**GOOD, "auc": 0.6949}, prod, GATE)) == {"auc_vs_production"}
    assert _failed(check_gate({**GOOD, "auc": 0.71, "log_loss": 0.6101}, prod, GATE)) == {"log_loss_vs_production"}


def test_better_than_production_passes_and_zero_tolerance_allows_equal() -> None:
    prod = {"auc": 0.70, "log_loss": 0.60}
    strict = GATE.model_copy(update={"auc_tolerance": 0.0, "log_loss_tolerance": 0.0})
    assert check_gate({**GOOD, "auc": 0.70, "log_loss": 0.60}, prod, strict).passed
    assert not check_gate({**GOOD, "auc": 0.6999, "log_loss": 0.60}, prod, strict).passed


def test_production_metric_nan_fails_the_comparison() -> None:
    result = check_gate(GOOD, {"auc": math.nan, "log_loss": 0.6}, GATE)
    assert _failed(result) == {"auc_vs_production"}
    assert result.failures()[0].detail == "production auc - gate.auc_tolerance is missing or NaN"


def _report(passed: bool) -> EvalReport:
    cand = {**GOOD, "auc": 0.5} if not passed else GOOD
    gate = check_gate(cand, None, GATE)
    metrics = ModelMetrics(model_uri="runs:/r/model", **cand)
    return EvalReport(run_id="r1", registered_model="m", dataset="d", dataset_version="v", dataset_fingerprint="f",
                      rows=10, label_rate=0.3, candidate=metrics, production=None, production_version=None,
                      oracle=None, gate=gate, verdict="passed" if gate.passed else "refused",
                      evaluated_at=datetime.now(timezone.utc))


def test_refused_report_raises_gate_refused_naming_the_checks() -> None:
    _report(True).raise_if_refused()
    with pytest.raises(GateRefusedError) as exc:
        _report(False).raise_if_refused()
    assert exc.value.exit_code == 1
    assert str(exc.value) == "gate refused run r1: auc 0.5000 outside >= 0.6000 (gate.min_auc)"
