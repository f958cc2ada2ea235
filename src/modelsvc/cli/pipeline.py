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
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run etl → materialize → build-dataset → train → evaluate → promote (promote only when the gate passes).

    The step that fails is named and its exit code returned.

    Example: modelsvc run --start-date 2026-01-01 --end-date 2026-01-28
    """
    from modelsvc.pipeline import run_pipeline

    settings = settings_for(config, profile)
    report = run(lambda: run_pipeline(settings, start_date=start_date, end_date=end_date, skip_etl=skip_etl,
                                      reporter=reporter(as_json)))
    if as_json:
        emit_json(report)
    else:
        rows = [(s.step, s.status, f"{s.seconds:.1f}s", s.error or _brief(s.summary)) for s in report.steps]
        console.print(rows_table(f"modelsvc run {report.start_date}..{report.end_date}",
                                 ["step", "status", "time", "result"], rows))
        console.print(f"run id: {report.run_id or '-'}   dataset: {report.dataset_version or '-'}   "
                      f"promoted version: {report.promoted_version or '-'}   total: {report.seconds:.1f}s")
    if report.exit_code:
        typer.echo(f"Error: {report.message}", err=True)
        raise typer.Exit(report.exit_code)


def _brief(summary: dict[str, object]) -> str:
    keys = [k for k in summary if not isinstance(summary[k], (dict, list))][:4]
    return ", ".join(f"{k}={summary[k]}" for k in keys)
