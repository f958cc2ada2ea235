"""Model commands: train, evaluate."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, reporter, run, settings_for
from modelsvc.cli.render import show


@app.command("train")
def train_cmd(
    dataset: Annotated[str | None, typer.Option("--dataset", help="Dataset name (default: dataset.name).")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Dataset version (default: the latest).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train the model with Ray Train and log it to MLflow; rerunning an interrupted training resumes it.

    Example: modelsvc train --dataset ctr_training --config configs/
    """
    settings = settings_for(config, profile)
    from modelsvc.training import train

    result = run(lambda: train(settings, dataset=dataset, version=version, reporter=reporter(as_json)),
                 lock=settings)
    show(result, as_json)


@app.command("evaluate")
def evaluate_cmd(
    run_id: Annotated[str, typer.Option("--run-id", help="MLflow run id of the trained candidate.")],
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
    show(report, as_json)
    run(report.raise_if_refused)
