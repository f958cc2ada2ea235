"""Operational commands: config, doctor, run."""

from __future__ import annotations

from modelsvc.cli import DEFAULT_CONFIG, ConfigOpt, JsonOpt, ProfileOpt, app, run, settings_for
from modelsvc.cli.render import console, emit_json


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

    console.print(yaml.safe_dump(data, sort_keys=False).rstrip())
