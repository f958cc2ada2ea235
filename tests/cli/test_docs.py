"""The docs tell the truth: every command documented, every setting in .env.template, links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_docs", REPO / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registered_command_is_documented_in_cli_md(gen):
    text = (REPO / "docs" / "cli.md").read_text()
    documented = set(re.findall(r"^## (modelsvc [\w -]+?)\s*$", text, flags=re.M)) - {"modelsvc"}
    registered = {name for name, _ in gen.commands()}
    assert registered, "no commands registered"
    assert registered - documented == set(), "undocumented commands: run `make docs`"
    assert documented - registered == set(), "docs/cli.md documents commands that no longer exist: run `make docs`"


def test_every_command_has_an_example_and_the_common_options(gen):
    for name, cmd in gen.commands():
        if hasattr(cmd, "commands"):
            continue  # a group
        assert "Example: modelsvc" in (cmd.help or ""), f"{name}: the docstring needs an 'Example: ...' line"
        options = {opt for p in cmd.params for opt in getattr(p, "opts", [])}
        assert {"--config", "--json"} <= options, f"{name}: every command takes --config and --json"


def test_every_registered_command_is_in_the_readme(gen):
    readme = (REPO / "README.md").read_text()
    missing = [name for name, _ in gen.commands() if f"`{name}`" not in readme]
    assert missing == []


def test_cli_md_is_generated_from_help(gen):
    """The parts of cli.md that come from --help match the current help text (command by command)."""
    text = (REPO / "docs" / "cli.md").read_text()
    for name, _ in gen.commands():
        usage = f"Usage: {name} [OPTIONS]"
        assert usage in text, f"{name}: usage line missing from docs/cli.md: run `make docs`"


def test_every_setting_has_a_line_in_env_template(gen):
    template = (REPO / ".env.template").read_text()
    names = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", template, flags=re.M))
    expected = {gen.env_name(path) for path, _, _ in gen.leaf_fields()}
    assert len(expected) > 60
    assert expected - names == set(), "settings without a line in .env.template: run `make docs`"
    assert names - expected - set(gen.STANDARD_VARIABLES) == set(), ".env.template lists variables no setting reads"
    for standard in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "MODELSVC_PROFILE", "MODELSVC_CONFIG_DIR"):
        assert standard in names


def test_env_template_holds_no_values(gen):
    for line in (REPO / ".env.template").read_text().splitlines():
        assert line == "" or line.startswith("#"), f"uncommented line in .env.template: {line!r}"
        m = re.match(r"^# (\w*PASSWORD\w*)=(.*)$", line)
        if m:
            assert m.group(2) == "", f"{m.group(1)} has a value in .env.template"


def test_env_template_lines_are_accepted_by_the_settings(gen, tmp_path, monkeypatch):
    """Uncommenting every line of the template (defaults) gives a valid configuration."""
    from modelsvc.config import Settings, load_settings

    lines = []
    for line in (REPO / ".env.template").read_text().splitlines():
        m = re.match(r"^# (MODELSVC_[A-Z0-9_]+)=(.+)$", line)
        if m and m.group(1) not in {"MODELSVC_CONFIG_DIR", "MODELSVC_PROFILE"}:
            lines.append(f"{m.group(1)}={m.group(2)}")
    assert len(lines) > 50
    (tmp_path / ".env").write_text("\n".join(lines) + "\nMODELSVC_TRAINING__EPOCHS=2\n")  # the last one wins
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(None).model_dump()
    assert loaded["training"]["epochs"] == 2  # proof that the file was read
    loaded["training"]["epochs"] = 20
    assert loaded == Settings(_env_file=None).model_dump()


def test_configuration_reference_lists_every_setting(gen):
    text = (REPO / "docs" / "configuration.md").read_text()
    missing = [gen.env_name(p) for p, _, _ in gen.leaf_fields() if f"`{gen.env_name(p)}`" not in text]
    assert missing == [], "run `make docs`"


def test_markdown_links_resolve():
    files = [REPO / "README.md", *(REPO / "docs").glob("*.md")]
    for md in files:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", md.read_text()):
            if re.match(r"^[a-z]+://", target):
                continue
            assert (md.parent / target).exists(), f"{md.relative_to(REPO)} links to missing {target}"


def test_readme_setup_commands_are_make_targets():
    readme = (REPO / "README.md").read_text()
    makefile = (REPO / "Makefile").read_text()
    start = readme.index("## Start here")
    assert "make demo" in readme[start:start + 400]
    assert "make test" in readme[start:start + 400]
    for target in re.findall(r"`make ([a-z-]+)`|^make ([a-z-]+)", readme, flags=re.M):
        name = target[0] or target[1]
        assert re.search(rf"^{name}:", makefile, flags=re.M), f"README mentions make {name}: no such target"


def test_make_help_and_the_demo_recipe_use_real_commands(gen):
    import shutil
    import subprocess

    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    helped = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    for target in ("venv", "demo", "test", "lint", "docs", "clean"):
        assert re.search(rf"^\s+{target}\s", helped, flags=re.M), f"make help does not list {target}"
    # -n: print the demo's commands without running them (the venv exists, so nothing is installed)
    recipe = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    used = re.findall(r"\bmodelsvc ([a-z][a-z-]*)", recipe)
    assert used, recipe
    registered = {name.split()[1] for name, _ in gen.commands()}
    assert set(used) <= registered, f"make demo calls commands that do not exist: {set(used) - registered}"
