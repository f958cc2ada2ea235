"""Operational commands: config, doctor."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, run, settings_for
from modelsvc.cli.render import show, show_config


@app.command("config")
def config_cmd(config: ConfigOpt = DEFAULT_CONFIG, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Print the resolved settings (secrets masked).

    Example: modelsvc config --config configs/ --json
    """
    settings = settings_for(config, profile)
    data = run(settings.masked_dump)
    show_config(data, as_json)


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
    show(report, as_json)
    run(report.raise_if_failed)

