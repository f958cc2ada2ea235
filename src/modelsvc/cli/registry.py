"""Evaluation and registry commands: evaluate, promote, rollback."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, reporter, run, settings_for
from modelsvc.cli.render import console, emit_json, kv_table, rows_table

if TYPE_CHECKING:
    from modelsvc.evaluation import EvalReport
    from modelsvc.registry import Promotion

RunIdOpt = Annotated[str, typer.Option("--run-id", help="MLflow run id of the trained candidate.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded on the model version).")]


@app.command("evaluate")
def evaluate_cmd(
    run_id: RunIdOpt,
    dataset: Annotated[str | None, typer.Option(
        "--dataset", help="Dataset name (latest version); default: the dataset the run was trained on.")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score a run and production on the test split, apply the promotion gate, store the report in the run.

    Exits 0 when the gate passes and 1 when it refuses; the report is printed either way.

    Example: modelsvc evaluate --run-id 3f2a9c0d41e54b7c8f0a1b2c3d4e5f60 --json
    """
    settings = settings_for(config, profile)
    from modelsvc.evaluation import evaluate

    report = run(lambda: evaluate(settings, run_id=run_id, dataset=dataset, reporter=reporter(as_json)))
    if as_json:
        emit_json(report)
    else:
        _render_report(report)
    run(report.raise_if_refused)


@app.command("promote")
def promote_cmd(
    run_id: RunIdOpt,
    force: Annotated[bool, typer.Option("--force", help="Bypass the evaluation gate (needs --reason).")] = False,
    reason: ReasonOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a run's model and move the production alias to it (needs a passed evaluation).

    Promoting the version already in production does nothing. Exit 1 when the run has no passed evaluation.

    Example: modelsvc promote --run-id 3f2a9c0d41e54b7c8f0a1b2c3d4e5f60
    """
    settings = settings_for(config, profile)
    from modelsvc.registry import promote

    result = run(lambda: promote(settings, run_id=run_id, force=force, reason=reason), lock=settings)
    _render_promotion(result, as_json)


@app.command("rollback")
def rollback_cmd(
    reason: ReasonOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the production alias back to the version the current one replaced.

    Example: modelsvc rollback --reason "CTR dropped after the last promotion"
    """
    settings = settings_for(config, profile)
    from modelsvc.registry import rollback

    result = run(lambda: rollback(settings, reason=reason), lock=settings)
    _render_promotion(result, as_json)


# -- rendering -------------------------------------------------------------------------------------------------

def _render_report(report: EvalReport) -> None:
    cand, prod = report.candidate, report.production
    bounds = {c.name: c for c in report.gate.checks}
    rows: list[list[Any]] = []
    for metric, limit in (("auc", "min_auc"), ("log_loss", "max_log_loss"), ("brier", "max_brier"),
                          ("calibration_error", "max_calibration_error")):
        check = bounds[limit]
        rows.append([metric, getattr(cand, metric), getattr(prod, metric) if prod else None,
                     f"{check.op} {check.bound}"])
    title = (f"Evaluation of run {report.run_id} on {report.dataset}/{report.dataset_version} "
             f"({report.split}, {report.rows} rows)")
    prod_col = f"production v{report.production_version}" if report.production_version else "production"
    console.print(rows_table(title, ["metric", "candidate", prod_col, "bound"], rows))
    slices = sorted(set(cand.slices) | set(prod.slices if prod else {}))
    console.print(rows_table(
        "AUC by slice", ["slice", "rows", "candidate", prod_col],
        [[s, cand.slices[s].rows if s in cand.slices else None,
          cand.slices[s].auc if s in cand.slices else None,
          prod.slices[s].auc if prod and s in prod.slices else None] for s in slices]))
    if report.oracle is not None:
        o = report.oracle
        console.print(kv_table("Demo oracle", [("rows", o.rows), ("oracle AUC", o.oracle_auc),
                                              ("candidate AUC", o.candidate_auc), ("gap", o.gap)]))
    console.print(rows_table(
        "Gate", ["check", "value", "bound", "result"],
        [[c.name, c.value, f"{c.op} {c.bound}" if c.bound is not None else "-", "pass" if c.passed else "FAIL"]
         for c in report.gate.checks]))
    style = "green" if report.verdict == "passed" else "red"
    console.print(f"gate: {report.gate.note}", soft_wrap=True)
    console.print(f"verdict: [{style}]{report.verdict}[/{style}]")


def _render_promotion(result: Promotion, as_json: bool) -> None:
    if as_json:
        emit_json(result)
        return
    title = f"{result.action}: {result.model_uri}"
    rows: list[tuple[str, Any]] = [
        ("version", result.version), ("run id", result.run_id), ("replaced version", result.previous_version),
        ("actor", result.actor), ("at", result.at.isoformat()), ("reason", result.reason),
        ("forced", result.forced), ("verdict", result.verdict),
    ]
    rows += [(k, v) for k, v in sorted(result.metrics.items())]
    console.print(kv_table(title, rows))
    if not result.changed:
        console.print(f"nothing changed: version {result.version} is already in production", soft_wrap=True)
