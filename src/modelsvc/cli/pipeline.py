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
from modelsvc.cli.render import show, show_runs


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
    show(report, as_json)
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
    show_runs(records, as_json)
