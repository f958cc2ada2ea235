"""Data commands: demo-data, etl."""

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
from modelsvc.cli.render import show


@app.command("demo-data")
def demo_data_cmd(
    users: Annotated[int, typer.Option("--users", help="Number of users.")] = 10_000,
    days: Annotated[int, typer.Option("--days", help="Number of days, one raw partition each.")] = 28,
    start_date: Annotated[str, typer.Option("--start-date", help="First day, YYYY-MM-DD.")] = "2025-01-01",
    seed: Annotated[int, typer.Option("--seed", help="Random seed: the same seed gives the same rows.")] = 7,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write realistic raw events (and the click oracle) for USERS users over DAYS days.

    Replaces the whole raw-events and click-oracle tables: an earlier run's other days are emptied.

    Example: modelsvc demo-data --users 10000 --days 28 --start-date 2025-01-01 --seed 7
    """
    settings = settings_for(config, profile)
    from modelsvc.demo import generate_demo_data

    result = run(lambda: generate_demo_data(settings, users=users, days=days, start_date=start_date, seed=seed,
                                            reporter=reporter(as_json)))
    show(result, as_json)


@app.command("etl")
def etl_cmd(
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Compute the daily and 10-minute feature tables from raw events, one partition per day (reruns replace).

    Example: modelsvc etl --start-date 2025-01-01 --end-date 2025-01-28
    """
    settings = settings_for(config, profile)
    from modelsvc.etl import run_etl

    result = run(lambda: run_etl(settings, start_date=start_date, end_date=end_date, reporter=reporter(as_json)),
                 lock=settings)
    show(result, as_json)
