"""Feature-store commands: materialize, build-dataset, datasets."""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, reporter, run, settings_for
from modelsvc.cli.render import show


@app.command("materialize")
def materialize_cmd(
    end_date: Annotated[str | None, typer.Option(
        "--end-date", help="Materialize feature rows up to this time (YYYY-MM-DD[THH:MM:SS], UTC; default: now).")
    ] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the feature definitions if they changed, then load the latest feature values into the online store.

    Incremental: each feature view continues where the previous run stopped; the same --end-date again writes
    nothing.

    Example: modelsvc materialize --end-date 2026-01-29
    """
    from modelsvc.features import materialize

    settings = settings_for(config, profile)
    report = run(lambda: materialize(settings, end=end_date, reporter=reporter(as_json)), lock=settings)
    show(report, as_json)


@app.command("build-dataset")
def build_dataset_cmd(
    start_date: Annotated[str, typer.Option("--start-date", help="First impression day (YYYY-MM-DD).")],
    end_date: Annotated[str, typer.Option("--end-date", help="Last impression day, inclusive (YYYY-MM-DD).")],
    name: Annotated[str | None, typer.Option("--name", help="Dataset name (default: dataset.name).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Join a day range's impressions to their point-in-time features, split by time, write a dataset version.

    Writes Parquet files (each split its own, at most dataset.file_rows rows each) and, last, manifest.json to
    <paths.datasets>/<name>/<version>/ (a local folder or a URI such as s3://bucket/datasets).

    Example: modelsvc build-dataset --start-date 2026-01-08 --end-date 2026-01-28 --name ctr_training
    """
    from modelsvc.dataset import build_dataset

    settings = settings_for(config, profile)
    manifest = run(lambda: build_dataset(settings, start_date=start_date, end_date=end_date, name=name,
                                         reporter=reporter(as_json)), lock=settings)
    show(manifest, as_json)


class DatasetsAction(str, Enum):
    LIST = "list"


@app.command("datasets")
def datasets_cmd(
    action: Annotated[DatasetsAction, typer.Argument(help="What to do: list (the default).")] = DatasetsAction.LIST,
    name: Annotated[str | None, typer.Option("--name", help="Only this dataset (default: every dataset).")] = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the committed dataset versions under paths.datasets, oldest first (a version commits when its
    manifest is written: an interrupted build-dataset is never listed).

    Example: modelsvc datasets list --name ctr_training --json   (or: modelsvc datasets --name ctr_training)
    """
    from modelsvc.dataset import list_datasets

    settings = settings_for(config, profile)
    show(run(lambda: list_datasets(settings, name)), as_json)
