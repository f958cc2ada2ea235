"""Prediction commands: serve, predict, score."""

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

ModelRunOpt = Annotated[str | None, typer.Option(
    "--run-id", help="Use this MLflow run's model instead of the production alias.")]


@app.command("serve")
def serve_cmd(
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on (default: serving.host).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (default: serving.port).", min=1,
                                             max=65535)] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Server processes (default: serving.workers).",
                                                min=1)] = None,
    run_id: ModelRunOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Log one JSON object per line on stderr.")] = False,
) -> None:
    """Serve predictions over HTTP: POST /v1/predict, /healthz, /readyz, /metrics (docs/serving.md).

    Follows the production alias: a promote or rollback is picked up within serving.reload_interval_s.

    Example: modelsvc serve --host 0.0.0.0 --port 8080 --workers 2
    """
    settings = settings_for(config, profile)
    from modelsvc.serving import serve

    run(lambda: serve(settings, host=host, port=port, workers=workers, run_id=run_id, json_logs=as_json))


@app.command("predict")
def predict_cmd(
    user_id: Annotated[list[int], typer.Option("--user-id", help="A user to predict for (repeat for more).")],
    run_id: ModelRunOpt = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="Judge feature freshness at this instant, YYYY-MM-DDTHH:MM:SS UTC (default: now).")] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Show the feature values the model was given.")] = False,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Predict the click probability of users now, on the same path as the service (online features, the
    production model).

    Example: modelsvc predict --user-id 42 --user-id 43 --json
    """
    settings = settings_for(config, profile)
    from modelsvc.serving import predict
    from modelsvc.timeutil import parse_timestamp

    result = run(lambda: predict(settings, user_ids=user_id, run_id=run_id, explain=explain,
                                 at=parse_timestamp(at, option="--at") if at else None))
    show(result, as_json)


@app.command("score")
def score_cmd(
    start_date: StartOpt = None,
    end_date: EndOpt = None,
    run_id: ModelRunOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Score every impression of a day range with its point-in-time features into the predictions table
    (one partition per day, replaced atomically: running it again gives the same table). A range of at least
    serving.score_ray_min_days days runs on Ray when a cluster is configured (ray.address / RAY_ADDRESS).

    Example: modelsvc score --start-date 2025-01-20 --end-date 2025-01-28
    """
    settings = settings_for(config, profile)
    from modelsvc.serving import score

    result = run(lambda: score(settings, start_date=start_date, end_date=end_date, run_id=run_id,
                               reporter=reporter(as_json)))
    show(result, as_json)
