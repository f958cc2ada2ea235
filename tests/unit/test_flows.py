"""modelsvc.flows without a server: which failures are retried, the backoff, the cache keys, prefect.yaml."""

from __future__ import annotations

import os
from datetime import date

import pytest
import yaml

from modelsvc.errors import (
    ConfigError,
    DataError,
    GateRefusedError,
    MissingDependencyError,
    ModelsvcError,
    RetryableError,
    ServiceUnavailableError,
)
from tests.conftest import REPO_ROOT

pytest.importorskip("prefect")

from prefect.states import Failed

from modelsvc import flows


@pytest.mark.parametrize(("exc", "retried"), [
    (ServiceUnavailableError("mlflow down"), True),
    (RetryableError("partition not yet available"), True),
    (DataError("bad rows"), False),
    (ConfigError("bad key"), False),
    (GateRefusedError("refused"), False),
    (ModelsvcError("bug"), False),
    (MissingDependencyError("pip install 'modelsvc[hive]'"), False),  # exit 69 too, but no retry installs it
    (RuntimeError("bug"), False),
])
def test_only_service_unavailable_and_retry_later_are_retried(exc, retried):
    assert flows.retryable(None, None, Failed(data=exc)) is retried


def test_retry_delays_double_from_the_setting(settings):
    settings.prefect.retries, settings.prefect.retry_delay_s = 3, 5.0
    assert flows.retry_delays(settings) == [5.0, 10.0, 20.0]


def test_etl_key_changes_with_a_raw_file_and_with_the_settings_not_otherwise(settings):
    from modelsvc.demo import generate_demo_data

    generate_demo_data(settings, users=30, days=3, start_date="2025-03-01", seed=1)
    params = {"settings": settings, "start_date": date(2025, 3, 2), "end_date": date(2025, 3, 3)}
    key = flows._etl_key(None, params)
    assert key is not None
    assert flows._etl_key(None, params) == key

    f = next((settings.paths.resolve("warehouse") / "raw_events" / "ds=2025-03-01").iterdir())
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # the lookback window is read: its days count
    touched = flows._etl_key(None, params)
    assert touched != key

    settings.etl.orders_window_days = 3
    assert flows._etl_key(None, params) not in {key, touched}


def test_hive_steps_are_not_cached(settings):
    settings.warehouse.engine = "hive"
    assert flows._etl_key(None, {"settings": settings, "start_date": date(2025, 3, 2),
                                 "end_date": date(2025, 3, 3)}) is None


def test_prefect_yaml_deploys_both_flows_on_the_crons_of_flows_py():
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    by_name = {d["name"]: d for d in spec["deployments"]}
    assert by_name["features-daily"]["entrypoint"] == "src/modelsvc/flows.py:features_flow"
    assert by_name["training-weekly"]["entrypoint"] == "src/modelsvc/flows.py:training_flow"
    assert [s["cron"] for s in by_name["features-daily"]["schedules"]] == [flows.FEATURES_CRON]
    assert [s["cron"] for s in by_name["training-weekly"]["schedules"]] == [flows.TRAINING_CRON]
    assert {d["work_pool"]["name"] for d in spec["deployments"]} == {"modelsvc"}
    served = {d.name: d for d in flows.deployments()}
    assert {name: [s.schedule.cron for s in d.schedules] for name, d in served.items()} == {
        "features-daily": [flows.FEATURES_CRON], "training-weekly": [flows.TRAINING_CRON]}


def test_summary_is_a_markdown_table():
    md = flows.summary_markdown("features", [date(2025, 3, 2), date(2025, 3, 3)],
                                [("etl", "Cached", "days=2"), ("materialize", "Completed", "rows=5 | x")])
    assert md.splitlines()[2:] == ["| step | state | result |", "|---|---|---|", "| etl | Cached | days=2 |",
                                   "| materialize | Completed | rows=5 \\| x |"]


def test_python_m_modelsvc_flows_without_serve_prints_its_usage_and_exits_64():
    lines: list[str] = []
    assert flows.main(["run"], out=lines.append) == 64
    assert lines == ["usage: python -m modelsvc.flows serve [CONFIG_DIR]\n"]
