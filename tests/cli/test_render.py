"""The CLI's rendering: one renderer per result in cli/render.py, floats rounded in summaries, shell completion."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app
from modelsvc.cli.render import brief

runner = CliRunner()


def test_step_summaries_round_floats_and_leave_out_nested_values():
    summary = {"label_rate": 0.13103462390336415, "rows": 439754, "splits": {"train": 1}, "name": "ctr",
               "auc": 0.7745355761468591, "more": 1}
    assert brief(summary) == "label_rate=0.131, rows=439754, name=ctr, auc=0.7745"


def test_run_summary_shows_rounded_floats(monkeypatch):
    """`modelsvc run`'s table printed label_rate=0.13103462390336415; it rounds like every other table."""
    from modelsvc.cli.render import show
    from modelsvc.pipeline import PipelineReport, StepResult

    report = PipelineReport(start_date="2025-01-01", end_date="2025-01-02", seconds=1.0, steps=[
        StepResult(step="build-dataset", status="ok", seconds=1.0,
                   summary={"rows": 10, "label_rate": 0.13103462390336415})])
    with monkeypatch.context() as m:
        printed: list[str] = []
        m.setattr("modelsvc.cli.render.console.print", lambda obj, **_: printed.append(_plain(obj)))
        show(report, as_json=False)
    text = "\n".join(printed)
    assert "label_rate=0.131" in text
    assert "0.13103462390336415" not in text


def _plain(obj: object) -> str:
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(obj)
    return console.export_text()


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_is_on(shell, monkeypatch):
    # Typer detects the user's shell from the process tree; a test names it (Typer's own switch for tests)
    monkeypatch.setenv("_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION", "1")
    result = runner.invoke(app, ["--show-completion", shell], prog_name="modelsvc")
    assert result.exit_code == 0, result.output
    assert "_MODELSVC_COMPLETE" in result.output


def test_materialize_leaves_parsing_its_end_date_to_the_library(workdir):
    result = runner.invoke(app, ["materialize", "--end-date", "2025-13-01"])
    assert result.exit_code == 64
    assert result.output == ("Error: --end-date: '2025-13-01' is not a timestamp "
                             "(expected YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)\n")
