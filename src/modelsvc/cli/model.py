"""Model commands: train, evaluate, promote, rollback."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, reporter, run, settings_for
from modelsvc.cli.render import console, emit_json, kv_table, rows_table


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
    if as_json:
        emit_json(result)
        return
    console.print(rows_table(
        "Epochs", ["epoch", "train_loss", "val_loss", "val_auc", "samples/s"],
        ((h.epoch, h.train_loss, h.val_loss, h.val_auc, round(h.samples_per_s)) for h in result.history),
    ))
    console.print(kv_table("Training", [
        ("MLflow run", result.run_id),
        ("model", result.model_uri),
        ("dataset", f"{result.dataset_name}/{result.dataset_version}"),
        ("best epoch", f"{result.best_epoch} of {result.epochs_run}" + (" (early stop)" if result.stopped_early
                                                                         else "")),
        *((k, round(v) if k == "samples_per_s" else v) for k, v in result.metrics.items()),
        ("data path", f"{result.data_path} on {result.device} x{result.num_workers}"),
        ("resumed", result.resumed),
        ("wall time s", result.wall_s),
    ]))
