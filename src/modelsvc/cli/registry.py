"""Registry commands: promote, rollback."""

from __future__ import annotations

from typing import Annotated

import typer

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, run, settings_for
from modelsvc.cli.render import show

RunIdOpt = Annotated[str, typer.Option("--run-id", help="MLflow run id of the trained candidate.")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why (recorded on the model version).")]


@app.command("promote")
def promote_cmd(
    run_id: RunIdOpt,
    force: Annotated[bool, typer.Option("--force", help="Bypass the evaluation gate (needs --reason).")] = False,
    reason: ReasonOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a run's model and move the production alias to it (needs a passed evaluation).

    Promoting the version already in production does nothing. Exit 1 when the run has no passed evaluation.

    Example: modelsvc promote --run-id 3f2a9c0d41e54b7c8f0a1b2c3d4e5f60
    """
    settings = settings_for(config, profile)
    from modelsvc.registry import promote

    # no data-root lock: promote and rollback hold the registry's own lock, and write no table
    result = run(lambda: promote(settings, run_id=run_id, force=force, reason=reason))
    show(result, as_json)


@app.command("rollback")
def rollback_cmd(
    reason: ReasonOpt = None,
    config: ConfigOpt = DEFAULT_CONFIG,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Move the production alias back to the version the current one replaced.

    Example: modelsvc rollback --reason "CTR dropped after the last promotion"
    """
    settings = settings_for(config, profile)
    from modelsvc.registry import rollback

    result = run(lambda: rollback(settings, reason=reason))
    show(result, as_json)
