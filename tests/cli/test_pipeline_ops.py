"""One pipeline at a time per data root, the run history, and incremental runs (``--plan``, skips, ``--force``)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelsvc.cli import app

runner = CliRunner()

_HOLDER = """
import sys, time
from modelsvc.config import load_settings
from modelsvc.runlock import data_root_lock
with data_root_lock(load_settings(sys.argv[1]), "modelsvc run 2025-01-01..2025-01-02"):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder(workdir):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(workdir / "configs")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args", [["run", "--start-date", "2025-01-01"], ["etl", "--start-date", "2025-01-01"],
                                  ["train"], ["materialize"]])
def test_a_second_writer_exits_75_at_once_naming_the_holder(workdir, holder, args):
    t0 = time.monotonic()
    result = runner.invoke(app, args)
    assert time.monotonic() - t0 < 10
    assert result.exit_code == 75, result.output
    line = result.stderr.splitlines()[0]
    assert line.startswith(f"Error: data root {workdir / 'data'} is busy: 'modelsvc run 2025-01-01..2025-01-02' "
                           f"(host {os.uname().nodename}, pid {holder.pid}, started 20")
    assert line.endswith("; retry when it is done")


@pytest.mark.timeout(60)
def test_a_dead_holders_lock_is_taken_over_and_logged(settings, workdir, holder, caplog):
    from modelsvc.runlock import data_root_lock

    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with caplog.at_level(logging.WARNING, logger="modelsvc.runlock"), data_root_lock(settings, "test") as me:
        assert me.pid == os.getpid()
    assert f"pid {holder.pid}" in caplog.text
    assert "ended without releasing it" in caplog.text


def test_the_lock_is_reentrant_in_one_process_and_released_after(settings):
    from modelsvc.runlock import data_root_lock, holder

    with data_root_lock(settings, "outer"), data_root_lock(settings, "inner"):
        assert holder(settings).command == "outer"
    assert holder(settings) is None


def test_runs_lists_past_runs_with_each_steps_status(workdir):
    failed = runner.invoke(app, ["run", "--start-date", "2025-01-01", "--end-date", "2025-01-02"])
    assert failed.exit_code == 75  # the raw days have not landed
    listed = runner.invoke(app, ["runs", "--json"])
    assert listed.exit_code == 0
    [record] = json.loads(listed.stdout)
    assert record["status"] == "failed"
    assert record["report"]["start_date"] == "2025-01-01"
    assert record["report"]["end_date"] == "2025-01-02"
    assert [(s["step"], s["status"]) for s in record["report"]["steps"]] == [
        ("etl", "failed")] + [(s, "skipped") for s in ("materialize", "build-dataset", "train", "evaluate", "promote")]
    assert "not yet available" in record["report"]["message"]
    table = runner.invoke(app, ["runs"])
    assert table.exit_code == 0
    assert "etl:failed" in table.stdout


def _plan(*extra: str) -> dict[str, tuple[str, str]]:
    result = runner.invoke(app, ["run", "--start-date", "2025-01-03", "--end-date", "2025-01-04", "--plan", "--json",
                                 *extra])
    assert result.exit_code == 0, result.output
    return {s["step"]: (s["status"], s["reason"]) for s in json.loads(result.stdout)["steps"]}


@pytest.mark.timeout(120)
def test_plan_changes_nothing_and_etl_is_skipped_until_its_inputs_change(settings, workdir):
    from datetime import date

    from modelsvc.incremental import state_path
    from modelsvc.pipeline import _Pipeline

    assert runner.invoke(app, ["demo-data", "--users", "50", "--days", "4"]).exit_code == 0
    before = sorted(p for p in (workdir / "data").rglob("*"))
    plan = _plan()
    assert plan["etl"] == ("planned", "no earlier ETL of these inputs")
    assert {s for s, _ in plan.values()} == {"planned"}
    assert sorted(p for p in (workdir / "data").rglob("*")) == before  # --plan changes nothing

    days = [date(2025, 1, 3), date(2025, 1, 4)]
    step = _Pipeline(settings, days, False, reporter=__import__("modelsvc.progress").progress.NULL, forced=set(),
                     plan=False)
    step._decide_etl()
    step._etl()
    step._save_state()
    assert Path(state_path(settings)).is_file()
    assert _plan()["etl"] == ("skipped", "inputs of all 2 days unchanged since their last ETL")
    assert _plan("--force", "etl")["etl"] == ("planned", "--force etl")

    raw = next((workdir / "data" / "warehouse" / "raw_events").glob("ds=2025-01-04/*"))
    os.utime(raw, ns=(time.time_ns(), time.time_ns()))  # new data landed for one day
    assert _plan()["etl"] == ("planned", "1 of 2 days new or changed: 2025-01-04..2025-01-04")


def test_force_names_a_step(workdir):
    result = runner.invoke(app, ["run", "--start-date", "2025-01-01", "--force", "nope", "--plan"])
    assert result.exit_code == 64
    assert result.stderr.splitlines()[0] == (
        "Error: --force nope: not a step (one of: all, etl, materialize, build-dataset, train, evaluate, promote)")


def test_an_interrupted_run_exits_130_is_in_the_history_and_releases_the_lock(settings, workdir, monkeypatch):
    import modelsvc.etl
    from modelsvc.runlock import holder

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    assert runner.invoke(app, ["demo-data", "--users", "20", "--days", "1"]).exit_code == 0
    monkeypatch.setattr(modelsvc.etl, "run_etl", interrupted)
    result = runner.invoke(app, ["run", "--start-date", "2025-01-01"])
    assert result.exit_code == 130
    assert result.stderr.splitlines()[-1] == "Error: interrupted"
    assert result.stderr.count("Error:") == 1
    [record] = json.loads(runner.invoke(app, ["runs", "--json"]).stdout)
    assert record["status"] == "interrupted"
    assert record["report"]["steps"][0]["step"] == "etl"
    assert record["report"]["steps"][0]["status"] == "interrupted"
    assert holder(settings) is None
