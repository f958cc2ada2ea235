"""The whole pipeline in one command: run."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import (
    DEFAULT_CONFIG,
    ConfigOpt,
    EndOpt,
    JsonOpt,
    ProfileOpt,
    StartOpt,
    app,
    reporter,
    run,
    settings_for,
)
from modelsvc.cli.render import console, emit_json, rows_table


@app.command("run")
def run_cmd(
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    skip_etl: Annotated[bool, typer.Option("--skip-etl", help="Use the feature tables as they are.")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="Print what each step would do, and why; change nothing.")]
    = False,
    force: Annotated[list[str] | None, typer.Option(
        "--force", metavar="STEP",
        help="Redo STEP even when its inputs did not change (repeatable; 'all' for every step).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run etl → materialize → build-dataset → train → evaluate → promote (promote only when the gate passes).

    Steps whose inputs did not change since their last success are skipped, with the reason; one run at a time
    per data root (a second exits 75). The step that fails is named and its exit code returned.

    Example: modelsvc run --start-date 2026-01-01 --end-date 2026-01-28 --plan
    """
    from modelsvc.pipeline import run_pipeline

    settings = settings_for(config, profile)
    report = run(lambda: run_pipeline(settings, start_date=start_date, end_date=end_date, skip_etl=skip_etl,
                                      reporter=reporter(as_json), plan=plan, force=force or ()))
    if as_json:
        emit_json(report)
    else:
        rows = [(s.step, s.status, f"{s.seconds:.1f}s", s.error or _why(s)) for s in report.steps]
        title = "plan" if plan else "run"
        console.print(rows_table(f"modelsvc {title} {report.start_date}..{report.end_date}",
                                 ["step", "status", "time", "result"], rows))
        if not plan:
            console.print(f"run id: {report.run_id or '-'}   dataset: {report.dataset_version or '-'}   "
                          f"promoted version: {report.promoted_version or '-'}   total: {report.seconds:.1f}s")
    if report.exit_code:
        typer.echo(f"Error: {report.message}", err=True)
        raise typer.Exit(report.exit_code)


@app.command("runs")
def runs_cmd(
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many runs.")] = 20,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List past pipeline runs, newest first: when, the day range, each step's status, time and result.

    Example: modelsvc runs --limit 5 --json
    """
    from modelsvc.history import list_runs

    settings = settings_for(config, profile)
    records = run(lambda: list_runs(settings, limit=limit))
    if as_json:
        emit_json([r.model_dump(mode="json") | {"status": r.status} for r in records])
        return
    rows = []
    for r in records:
        rep = r.report
        steps = " ".join(f"{s.step}:{s.status}" for s in rep.steps)
        when = f"{rep.started_at:%Y-%m-%d %H:%M:%S}" if rep.started_at else "-"
        rows.append((when, f"{rep.start_date}..{rep.end_date}", r.status, f"{rep.seconds:.1f}s", steps,
                     rep.message or f"run {rep.run_id or '-'}, promoted {rep.promoted_version or '-'}"))
    console.print(rows_table(f"modelsvc runs ({len(records)})", ["started (UTC)", "range", "status", "time",
                                                                   "steps", "result"], rows))


def _why(step: object) -> str:
    brief = _brief(getattr(step, "summary", {}))
    reason = getattr(step, "reason", None)
    return f"{reason}{'; ' + brief if brief else ''}" if reason else brief


def _brief(summary: dict[str, object]) -> str:
    keys = [k for k in summary if not isinstance(summary[k], (dict, list))][:4]
    return ", ".join(f"{k}={summary[k]}" for k in keys)
