"""Evaluation of a candidate model against production, and the promotion gate.

``evaluate`` scores the candidate run's pyfunc (``runs:/<id>/model``) on the test split of a dataset and, when the
registered model has the production alias, the production model on the same rows. It computes the metrics of
``modelsvc.metrics``, applies the gate of ``settings.evaluation.gate`` and stores the report in the candidate's
MLflow run (through ``modelsvc.tracking``): metrics ``eval_*``, the artifact ``evaluation/report.json`` and the
tags ``modelsvc.eval.*`` (the verdict, the dataset fingerprint and the production version the candidate was
compared with, which ``promote`` checks).

The gate ("do no harm"): the candidate must be within the absolute bounds, and, when production exists, no worse
than production by more than the tolerances. A missing or NaN metric fails its check. Bounds are inclusive.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from modelsvc import tracking
from modelsvc.config import GateSettings, Settings
from modelsvc.errors import DataError, GateRefusedError, ModelsvcError, UsageError
from modelsvc.metrics import brier_score, expected_calibration_error, log_loss, roc_auc
from modelsvc.progress import NULL, Reporter
from modelsvc.tracking import (
    METRIC_PREFIX,
    NO_PRODUCTION,
    REPORT_ARTIFACT,
    TAG_DATASET,
    TAG_DATASET_FINGERPRINT,
    TAG_DATASET_NAME,
    TAG_DATASET_VERSION,
    TAG_EVALUATED_AT,
    TAG_FINGERPRINT,
    TAG_PRODUCTION_VERSION,
    TAG_VERDICT,
    map_tracking_errors,
)

if TYPE_CHECKING:
    import pandas as pd

    from modelsvc.dataset import DatasetManifest

MISSING_SLICE = "missing"
# bounds are inclusive; this absorbs float noise in production +/- tolerance
_EDGE_EPS = 1e-9


# -- results ----------------------------------------------------------------------------------------------------

class SliceMetrics(BaseModel):
    rows: int
    label_rate: float | None
    auc: float | None = Field(description="None when the slice has a single class")


class ModelMetrics(BaseModel):
    """Metrics of one model on the evaluated rows."""

    model_uri: str
    auc: float | None
    log_loss: float | None
    brier: float | None
    calibration_error: float | None
    slices: dict[str, SliceMetrics] = Field(default_factory=dict)

    def headline(self) -> dict[str, float | None]:
        return {"auc": self.auc, "log_loss": self.log_loss, "brier": self.brier,
                "calibration_error": self.calibration_error}


class GateCheck(BaseModel):
    name: str
    metric: str
    value: float | None
    op: Literal[">=", "<="]
    bound: float | None
    passed: bool
    detail: str


class GateResult(BaseModel):
    passed: bool
    compared_to_production: bool
    note: str
    checks: list[GateCheck]

    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]


class OracleMetrics(BaseModel):
    """Demo data only: how close the candidate comes to the generator's true click probability."""

    table: str
    rows: int = Field(description="test rows matched in the oracle table")
    oracle_auc: float | None
    candidate_auc: float | None = Field(description="candidate AUC on the matched rows")
    gap: float | None = Field(description="oracle_auc - candidate_auc")


class EvalReport(BaseModel):
    """The result of ``evaluate``; also stored as ``evaluation/report.json`` in the candidate run."""

    run_id: str
    registered_model: str
    dataset: str
    dataset_version: str
    dataset_fingerprint: str
    split: str = "test"
    rows: int
    label_rate: float | None
    candidate: ModelMetrics
    production: ModelMetrics | None
    production_version: str | None
    oracle: OracleMetrics | None
    gate: GateResult
    verdict: Literal["passed", "refused"]
    evaluated_at: datetime

    def raise_if_refused(self) -> None:
        """GateRefusedError (exit 1) naming the failed checks when the gate refused the candidate."""
        if self.verdict != "passed":
            failed = "; ".join(c.detail for c in self.gate.failures())
            raise GateRefusedError(f"gate refused run {self.run_id}: {failed}")


# -- the gate ---------------------------------------------------------------------------------------------------

def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _check(name: str, metric: str, value: float | None, op: Literal[">=", "<="], bound: float | None,
           what: str) -> GateCheck:
    v, b = _num(value), _num(bound)
    if v is None:
        return GateCheck(name=name, metric=metric, value=None, op=op, bound=b, passed=False,
                         detail=f"{metric} is missing or NaN")
    if b is None:
        return GateCheck(name=name, metric=metric, value=v, op=op, bound=None, passed=False,
                         detail=f"{what} is missing or NaN")
    ok = v >= b - _EDGE_EPS if op == ">=" else v <= b + _EDGE_EPS
    rel = "within" if ok else "outside"
    return GateCheck(name=name, metric=metric, value=v, op=op, bound=b, passed=ok,
                     detail=f"{metric} {v:.4f} {rel} {op} {b:.4f} ({what})")


def check_gate(candidate: Mapping[str, float | None], production: Mapping[str, float | None] | None,
               gate: GateSettings) -> GateResult:
    """Apply the gate to headline metrics (``auc``, ``log_loss``, ``brier``, ``calibration_error``).

    Absolute bounds always; with ``production`` (not None) also do-no-harm: candidate AUC >= production AUC -
    auc_tolerance and candidate log loss <= production log loss + log_loss_tolerance.
    """
    checks = [
        _check("min_auc", "auc", candidate.get("auc"), ">=", gate.min_auc, "gate.min_auc"),
        _check("max_log_loss", "log_loss", candidate.get("log_loss"), "<=", gate.max_log_loss, "gate.max_log_loss"),
        _check("max_brier", "brier", candidate.get("brier"), "<=", gate.max_brier, "gate.max_brier"),
        _check("max_calibration_error", "calibration_error", candidate.get("calibration_error"), "<=",
               gate.max_calibration_error, "gate.max_calibration_error"),
    ]
    if production is None:
        note = "no production model: only the absolute bounds apply"
    else:
        note = "absolute bounds and do-no-harm against production"
        p_auc, p_ll = _num(production.get("auc")), _num(production.get("log_loss"))
        checks.append(_check("auc_vs_production", "auc", candidate.get("auc"), ">=",
                             None if p_auc is None else p_auc - gate.auc_tolerance,
                             "production auc - gate.auc_tolerance"))
        checks.append(_check("log_loss_vs_production", "log_loss", candidate.get("log_loss"), "<=",
                             None if p_ll is None else p_ll + gate.log_loss_tolerance,
                             "production log_loss + gate.log_loss_tolerance"))
    return GateResult(passed=all(c.passed for c in checks), compared_to_production=production is not None,
                      note=note, checks=checks)


# -- evaluate ---------------------------------------------------------------------------------------------------

def score(y: np.ndarray, p: np.ndarray, slices: np.ndarray, *, bins: int, model_uri: str) -> ModelMetrics:
    """All metrics of one model's predictions ``p`` for labels ``y``; ``slices`` holds the slice key per row."""
    per_slice: dict[str, SliceMetrics] = {}
    for key in sorted(set(slices.tolist())):
        mask = slices == key
        ys = y[mask]
        per_slice[key] = SliceMetrics(rows=int(mask.sum()), label_rate=float(ys.mean()) if ys.size else None,
                                      auc=_num(roc_auc(ys, p[mask])))
    return ModelMetrics(model_uri=model_uri, auc=_num(roc_auc(y, p)), log_loss=_num(log_loss(y, p)),
                        brier=_num(brier_score(y, p)), calibration_error=_num(expected_calibration_error(y, p, bins)),
                        slices=per_slice)


@map_tracking_errors
def evaluate(settings: Settings, *, run_id: str, dataset: str | None = None, reporter: Reporter = NULL) -> EvalReport:
    """Score run ``run_id`` (and production) on a dataset's test split, apply the gate, store the report.

    ``dataset``: a dataset name (its latest version); default the dataset the run was trained on (run tags).
    Returns the report whatever the verdict; ``EvalReport.raise_if_refused`` turns a refusal into an error.
    """
    from modelsvc.dataset import FEATURES, load_dataset, read_dataset

    client = tracking.mlflow_client(settings)
    run = tracking.get_run(client, run_id)
    manifest = _dataset_for(settings, run, dataset, load_dataset)
    reporter.log(f"evaluating run {run_id} on dataset {manifest.name}/{manifest.version} (test split)")

    df = read_dataset(manifest, split="test")
    label = manifest.label
    if df.empty:
        raise DataError(f"dataset {manifest.name}/{manifest.version} has no test rows")
    missing = [c for c in (label, *FEATURES) if c not in df.columns]
    if missing:
        raise DataError(f"dataset {manifest.name}/{manifest.version} lacks columns {missing}")
    labels = df[label]
    if labels.isna().any() or not labels.isin([0, 1]).all():
        raise DataError(f"dataset {manifest.name}/{manifest.version}: label '{label}' must be 0 or 1 in every test row")
    y = labels.to_numpy(dtype=np.float64)
    slice_col = settings.evaluation.slice_column
    slices = _slice_keys(df, slice_col)
    features = model_input(df)
    bins = settings.evaluation.calibration_bins

    with reporter.task("scoring", total=2) as task:
        cand_uri = tracking.run_model_uri(run_id)
        cand_p = _predict(settings, cand_uri, features)
        candidate = score(y, cand_p, slices, bins=bins, model_uri=cand_uri)
        task.advance()
        prod = tracking.production_version(settings, client)
        production = None
        if prod is not None:
            prod_uri = tracking.version_model_uri(settings.mlflow.registered_model, prod.version)
            production = score(y, _predict(settings, prod_uri, features), slices, bins=bins, model_uri=prod_uri)
        task.advance()

    try:
        oracle = _oracle_metrics(settings, df, y, cand_p)
    except ModelsvcError as exc:  # a demo-only metric: report without it rather than fail the evaluation
        reporter.log(f"oracle AUC skipped: {exc.message}")
        oracle = None
    gate = check_gate(candidate.headline(), production.headline() if production else None, settings.evaluation.gate)
    report = EvalReport(
        run_id=run_id, registered_model=settings.mlflow.registered_model, dataset=manifest.name,
        dataset_version=manifest.version, dataset_fingerprint=manifest.fingerprint, rows=int(y.size),
        label_rate=float(y.mean()), candidate=candidate, production=production,
        production_version=None if prod is None else str(prod.version), oracle=oracle, gate=gate,
        verdict="passed" if gate.passed else "refused", evaluated_at=datetime.now(timezone.utc),
    )
    _store(settings, client, report)
    return report


def model_input(df: pd.DataFrame) -> pd.DataFrame:
    """The pyfunc's input: the raw features, numeric ones as float64 (MLflow will not cast int64 to double)."""
    from modelsvc.dataset import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES

    out = df[list(FEATURES)].copy()
    for col in NUMERIC_FEATURES:
        out[col] = out[col].astype("float64")
    for col in CATEGORICAL_FEATURES:
        out[col] = out[col].astype(object).where(out[col].notna(), None)
    return out


def _dataset_for(settings: Settings, run: Any, name: str | None, load: Any) -> DatasetManifest:
    tags = run.data.tags
    if name is not None:
        return load(settings, name=name)
    ds_name, ds_version = tags.get(TAG_DATASET_NAME), tags.get(TAG_DATASET_VERSION)
    if not ds_name or not ds_version:
        raise UsageError(f"run {run.info.run_id} has no {TAG_DATASET_NAME}/{TAG_DATASET_VERSION} tags; "
                         "pass --dataset NAME")
    manifest: DatasetManifest = load(settings, name=ds_name, version=ds_version)
    trained_fp = tags.get(TAG_DATASET_FINGERPRINT)
    if trained_fp and trained_fp != manifest.fingerprint:
        raise DataError(f"dataset {ds_name}/{ds_version} changed since run {run.info.run_id} was trained on it "
                        f"(fingerprint {manifest.fingerprint[:12]} != {trained_fp[:12]})")
    return manifest


def _slice_keys(df: pd.DataFrame, column: str) -> np.ndarray:
    if column not in df.columns:
        raise DataError(f"slice column '{column}' (evaluation.slice_column) is not in the dataset")
    col = df[column]
    return np.where(col.isna(), MISSING_SLICE, col.astype(str)).astype(object)


def _predict(settings: Settings, model_uri: str, features: pd.DataFrame) -> np.ndarray:
    return tracking.predict(tracking.load_model(settings, model_uri), model_uri, features)


def _oracle_metrics(settings: Settings, df: pd.DataFrame, y: np.ndarray, cand_p: np.ndarray) -> OracleMetrics | None:
    """AUC of the demo generator's true probability on the test rows (None when there is no oracle table)."""
    table = settings.tables.click_oracle
    if "event_id" not in df.columns or "event_timestamp" not in df.columns:
        return None
    ts = df["event_timestamp"]
    oracle = _read_oracle(settings, table, ts.min().date(), ts.max().date())
    if oracle is None or oracle.empty:
        return None
    oracle = oracle.drop_duplicates("event_id", keep="last").set_index("event_id")["p_click"]
    matched = df["event_id"].map(oracle)
    mask = matched.notna().to_numpy()
    if not mask.any():
        return None
    o_auc, c_auc = _num(roc_auc(y[mask], matched[mask])), _num(roc_auc(y[mask], cand_p[mask]))
    gap = None if o_auc is None or c_auc is None else o_auc - c_auc
    return OracleMetrics(table=table, rows=int(mask.sum()), oracle_auc=o_auc, candidate_auc=c_auc, gap=gap)


def _read_oracle(settings: Settings, table: str, start: Any, end: Any) -> pd.DataFrame | None:
    from datetime import timedelta

    from modelsvc.warehouse import open_warehouse

    # the oracle is partitioned by the impression day; a day either side covers UTC edge cases
    with open_warehouse(settings) as wh:
        if not wh.table_exists(table):
            return None
        return wh.read(table, start=start - timedelta(days=1), end=end + timedelta(days=1),
                       columns=["event_id", "p_click"]).to_pandas()


def _store(settings: Settings, client: Any, report: EvalReport) -> None:
    """Metrics, tags and the JSON report into the candidate run; a copy under <reports>/evaluation/."""
    values: dict[str, float | None] = dict(report.candidate.headline())
    if report.production is not None:
        values.update({f"production_{k}": v for k, v in report.production.headline().items()})
    if report.oracle is not None:
        values.update({"oracle_auc": report.oracle.oracle_auc, "oracle_gap": report.oracle.gap})
    for key, sl in report.candidate.slices.items():
        values[f"auc_slice_{_metric_safe(key)}"] = sl.auc
    metrics = {METRIC_PREFIX + k: math.nan if v is None else float(v) for k, v in values.items()}
    tags = {
        TAG_VERDICT: report.verdict,
        TAG_FINGERPRINT: report.dataset_fingerprint,
        TAG_DATASET: f"{report.dataset}/{report.dataset_version}",
        TAG_PRODUCTION_VERSION: report.production_version or NO_PRODUCTION,
        TAG_EVALUATED_AT: report.evaluated_at.isoformat(),
    }
    text = report.model_dump_json(indent=2)
    tracking.log_values(client, report.run_id, metrics=metrics, tags=tags)
    client.log_text(report.run_id, text, REPORT_ARTIFACT)
    from modelsvc import storage

    storage.write_text(storage.join(settings.paths.location("reports"), "evaluation", f"{report.run_id}.json"),
                       text)  # atomic


def _metric_safe(key: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", key)[:200] or "_"


def read_report(settings: Settings, run_id: str) -> EvalReport | None:
    """The evaluation report stored in run ``run_id`` (None when it was never evaluated)."""
    data = tracking.read_report(settings, run_id)
    return None if data is None else EvalReport.model_validate(data)
