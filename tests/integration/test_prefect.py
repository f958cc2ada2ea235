"""The Prefect flows against a real Prefect server (tests/fixtures/prefect.py) on small demo data.

- deployed from prefect.yaml with ``prefect deploy --all``, both deployments run by a process worker to COMPLETED;
- a transient failure (exit 75) is retried and the run completes; bad data (exit 65) fails at once, one attempt;
- a second run of an unchanged day is served from the cache; changed raw data is not.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT
from tests.fixtures._service import start, stop, tail
from tests.fixtures.prefect import prefect_executable

pytestmark = [pytest.mark.integration, pytest.mark.slow]

START, DAYS = "2025-03-01", 8
FIRST, LAST = "2025-03-02", "2025-03-08"  # the ETL range: the first demo day is lookback only
FAST = {  # small data: a short training and a gate that lets it through; retries without waiting
    "MODELSVC_PREFECT__RETRY_DELAY_S": "0",
    "MODELSVC_TRAINING__EPOCHS": "2",
    "MODELSVC_TRAINING__BATCH_SIZE": "256",
    "MODELSVC_EVALUATION__GATE__MIN_AUC": "0",
    "MODELSVC_EVALUATION__GATE__MAX_LOG_LOSS": "5",
    "MODELSVC_EVALUATION__GATE__MAX_BRIER": "1",
    "MODELSVC_EVALUATION__GATE__MAX_CALIBRATION_ERROR": "1",
}
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture
def demo(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workdir with 8 days of demo events for 200 users, and the FAST settings in the environment."""
    from modelsvc.config import load_settings
    from modelsvc.demo import generate_demo_data

    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    generate_demo_data(load_settings(workdir / "configs"), users=200, days=DAYS, start_date=START, seed=3)
    return workdir


def _raw_file(workdir: Path, day: str) -> Path:
    return next((workdir / "data" / "warehouse" / "raw_events" / f"ds={day}").glob("*.parquet"))


def _task_runs(server: Any, flow_run_id: Any, timeout: float = 30) -> dict[str, Any]:
    """The task runs of a flow run by name, once the server recorded a final state for each (task states reach
    the server as events)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with server.client_settings(), get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(r.state is not None and r.state.is_final() for r in runs):
                return {r.name.rsplit("-", 1)[0]: r for r in runs}
            assert time.monotonic() < deadline, f"task runs not final: {[(r.name, r.state) for r in runs]}"
            time.sleep(0.5)


def _run_deployment(server: Any, name: str, parameters: dict[str, Any], *, alive: Any, log: Path,
                    timeout: float = 150) -> tuple[Any, Any]:
    """Trigger a run of deployment ``name``; its id and final state (a worker or serve process runs it)."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    with server.client_settings():
        run = run_deployment(name, parameters=parameters, timeout=0)
    deadline = time.monotonic() + timeout
    with server.client_settings(), get_client(sync_client=True) as client:
        while (state := client.read_flow_run(run.id).state) is None or state.type.value not in TERMINAL:
            assert alive(), f"the process running {name} exited\n{tail(log)}"
            assert time.monotonic() < deadline, f"{name} still {state} after {timeout:.0f} s\n{tail(log)}"
            time.sleep(1)
    return run.id, state


def _features(server: Any, workdir: Path) -> Any:
    """features_flow called in this process, recorded on the server; its final state."""
    from modelsvc.flows import features_flow

    with server.client_settings():
        return features_flow(start_date=FIRST, end_date=LAST, config_dir=str(workdir / "configs"),
                             return_state=True)


@pytest.mark.timeout(300)
def test_deployments_from_prefect_yaml_run_to_completed_on_a_process_worker(prefect_server, demo):
    from prefect.client.orchestration import get_client

    from modelsvc.flows import FEATURES_CRON, TRAINING_CRON

    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = prefect_server.env(PYTHONPATH=pythonpath, MODELSVC_CONFIG_DIR=str(demo / "configs"),
                             PREFECT_WORKER_QUERY_SECONDS="1", **FAST)
    prefect = prefect_executable()
    assert prefect is not None  # the prefect_server fixture found it

    def cli(*args: str) -> None:
        out = subprocess.run([prefect, "--no-prompt", *args], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, timeout=90)
        assert out.returncode == 0, f"prefect {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"

    cli("work-pool", "create", "modelsvc", "--type", "process", "--overwrite")
    cli("deploy", "--all")  # from prefect.yaml, in the repo root: the worker runs the flows from there

    with prefect_server.client_settings(), get_client(sync_client=True) as client:
        features = client.read_deployment_by_name("features/features-daily")
        training = client.read_deployment_by_name("training/training-weekly")
    assert [s.schedule.cron for s in features.schedules] == [FEATURES_CRON]
    assert [s.schedule.cron for s in training.schedules] == [TRAINING_CRON]
    assert features.work_pool_name == training.work_pool_name == "modelsvc"

    log = demo / "worker.log"
    worker = start([prefect, "worker", "start", "--pool", "modelsvc", "--limit", "1"], log, cwd=demo, env=env)
    try:
        for name, params in (("features/features-daily", {"start_date": FIRST, "end_date": LAST}),
                             ("training/training-weekly", {"start_date": FIRST, "end_date": LAST})):
            run_id, state = _run_deployment(prefect_server, name, params, alive=lambda: worker.poll() is None,
                                            log=log)
            assert state.type.value == "COMPLETED", f"{name}: {state}\n{tail(log, 60)}"
            steps = _task_runs(prefect_server, run_id)
            assert all(r.state.is_completed() for r in steps.values()), steps
    finally:
        stop(worker)
    assert set(steps) == {"build-dataset", "train", "evaluate", "promote"}

    with prefect_server.client_settings(), get_client(sync_client=True) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

        artifacts = {a.key: a for a in client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=["modelsvc-evaluation", "modelsvc-features-summary",
                                        "modelsvc-training-summary"])))}
    assert set(artifacts) == {"modelsvc-evaluation", "modelsvc-features-summary", "modelsvc-training-summary"}
    assert all(a.type == "markdown" for a in artifacts.values())
    assert "| auc |" in artifacts["modelsvc-evaluation"].data
    assert ": passed" in artifacts["modelsvc-evaluation"].data
    assert "| promote | Completed |" in artifacts["modelsvc-training-summary"].data

    # the same window again (in this process, same data root): dataset and training come from the cache, and the
    # model already in production is not registered again
    from modelsvc.flows import training_flow

    with prefect_server.client_settings():
        again = training_flow(start_date=FIRST, end_date=LAST, config_dir=str(demo / "configs"), return_state=True)
    assert again.is_completed(), again
    steps = _task_runs(prefect_server, again.state_details.flow_run_id)
    assert {name: r.state.name for name, r in steps.items()} == {
        "build-dataset": "Cached", "train": "Cached", "evaluate": "Completed", "promote": "Completed"}
    assert again.result()["promote"].changed is False


@pytest.mark.timeout(120)
def test_a_transient_failure_is_retried_and_the_run_completes(prefect_server, demo, monkeypatch):
    import modelsvc.etl
    from modelsvc.errors import RetryableError

    real, attempts = modelsvc.etl.run_etl, []

    def first_attempt_fails(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        if len(attempts) == 1:
            raise RetryableError("injected: warehouse busy, retry later")
        return real(*args, **kwargs)

    monkeypatch.setattr(modelsvc.etl, "run_etl", first_attempt_fails)
    state = _features(prefect_server, demo)
    assert state.is_completed(), state
    assert len(attempts) == 2
    steps = _task_runs(prefect_server, state.state_details.flow_run_id)
    assert steps["etl"].run_count == 2
    assert steps["etl"].state.is_completed()
    assert steps["materialize"].run_count == 1
    assert steps["materialize"].state.is_completed()


@pytest.mark.timeout(120)
def test_bad_data_fails_at_once_without_a_retry(prefect_server, demo):
    _raw_file(demo, "2025-03-05").write_bytes(b"not parquet")
    state = _features(prefect_server, demo)
    assert state.is_failed(), state
    assert "not a readable Parquet file" in str(state.result(raise_on_failure=False))
    steps = _task_runs(prefect_server, state.state_details.flow_run_id)
    assert set(steps) == {"etl"}  # materialize never started
    assert steps["etl"].state.is_failed()
    assert steps["etl"].run_count == 1


@pytest.mark.timeout(150)
def test_an_unchanged_day_is_served_from_the_cache_and_changed_data_is_not(prefect_server, demo):
    import pyarrow.parquet as pq

    first = _features(prefect_server, demo)
    assert first.is_completed(), first
    again = _features(prefect_server, demo)
    assert again.is_completed(), again
    steps = _task_runs(prefect_server, again.state_details.flow_run_id)
    assert {name: r.state.name for name, r in steps.items()} == {"etl": "Cached", "materialize": "Cached"}
    assert again.result()["etl"] == first.result()["etl"]  # the cached result is the first run's report

    f = _raw_file(demo, LAST)  # the last day changes: a late event dropped
    table = pq.read_table(f)
    pq.write_table(table.slice(0, table.num_rows - 1), f)
    changed = _features(prefect_server, demo)
    assert changed.is_completed(), changed
    steps = _task_runs(prefect_server, changed.state_details.flow_run_id)
    assert {name: r.state.name for name, r in steps.items()} == {"etl": "Completed", "materialize": "Completed"}
    assert changed.result()["etl"].raw_events_read == first.result()["etl"].raw_events_read - 1


@pytest.mark.timeout(180)
def test_python_m_modelsvc_flows_serve_schedules_and_runs_the_deployments(prefect_server, demo):
    import contextlib
    import sys

    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    from modelsvc.flows import FEATURES_CRON, TRAINING_CRON

    with prefect_server.client_settings(), get_client(sync_client=True) as client:
        for name in ("features/features-daily", "training/training-weekly"):  # prefect.yaml's, from another test
            with contextlib.suppress(ObjectNotFound):
                client.delete_deployment(client.read_deployment_by_name(name).id)
    pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    log = demo / "serve.log"
    proc = start([sys.executable, "-m", "modelsvc.flows", "serve", str(demo / "configs")], log, cwd=demo,
                 env=prefect_server.env(PYTHONPATH=pythonpath))

    def served() -> dict[str, Any]:
        with prefect_server.client_settings(), get_client(sync_client=True) as client:
            deps = {name: client.read_deployment_by_name(name)
                    for name in ("features/features-daily", "training/training-weekly")}
        # registered by the serve process: with its config dir as a parameter
        return deps if all(d.parameters.get("config_dir") == str(demo / "configs") for d in deps.values()) else {}

    try:
        deadline = time.monotonic() + 60
        while not (deps := _quiet(served)):
            assert proc.poll() is None, f"serve exited with {proc.returncode}\n{tail(log)}"
            assert time.monotonic() < deadline, f"the deployments were not served after 60 s\n{tail(log)}"
            time.sleep(1)
        assert [s.schedule.cron for s in deps["features/features-daily"].schedules] == [FEATURES_CRON]
        _, state = _run_deployment(prefect_server, "features/features-daily",
                                   {"start_date": FIRST, "end_date": LAST}, alive=lambda: proc.poll() is None, log=log)
        assert state.type.value == "COMPLETED", f"{state}\n{tail(log, 60)}"  # run by the serve process
    finally:
        stop(proc)
    assert [s.schedule.cron for s in deps["training/training-weekly"].schedules] == [TRAINING_CRON]


def _quiet(fn: Any) -> Any:
    """``fn()``, or {} while the server does not have the deployments yet."""
    from prefect.exceptions import ObjectNotFound

    try:
        return fn()
    except ObjectNotFound:
        return {}
