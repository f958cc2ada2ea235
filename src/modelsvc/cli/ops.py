"""Operational commands: config, doctor, run."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, run, settings_for
from modelsvc.cli.render import console, emit_json, rows_table


@app.command("config")
def config_cmd(config: ConfigOpt = DEFAULT_CONFIG, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Print the resolved settings (secrets masked).

    Example: modelsvc config --config configs/ --json
    """
    settings = settings_for(config, profile)
    data = run(settings.masked_dump)
    if as_json:
        emit_json(data)
        return
    import yaml

    # soft_wrap: rich must not fold long values (paths, URIs), or the YAML would no longer parse
    console.print(yaml.safe_dump(data, sort_keys=False).rstrip(), soft_wrap=True, markup=False)


@app.command("doctor")
def doctor_cmd(
    timeout: Annotated[float, typer.Option("--timeout", min=1, help="Seconds allowed to each check.")] = 30.0,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every backend the settings point at: warehouse, Feast, MLflow, Ray. Exits 69 when a check fails.

    Each row says what was found and, for a failure, how to fix it.

    Example: modelsvc doctor --profile production --json
    """
    from modelsvc.doctor import check_all

    settings = settings_for(config, profile)
    report = run(lambda: check_all(settings, timeout_s=timeout))
    if as_json:
        emit_json(report.model_dump(mode="json") | {"ok": report.ok})
    else:
        from rich.markup import escape  # details quote backend errors: never read them as markup

        rows = [(c.name, _STATUS.get(c.status, c.status), escape(c.detail),
                 escape(c.fix or "") if c.status in {"fail", "warn"} else "") for c in report.checks]
        console.print(rows_table(f"modelsvc doctor ({report.engine}, online store {report.online_store})",
                                 ["check", "status", "detail", "fix"], rows))
    run(report.raise_if_failed)


_STATUS = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[red]FAIL[/]", "skip": "[dim]skip[/]"}
