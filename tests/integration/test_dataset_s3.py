"""Datasets on an S3 API server (moto's standalone server on loopback, IAM auth enforced): build-dataset writes
straight to ``paths.datasets: s3://…`` and reads back what the local build does; a build killed mid-upload
leaves no visible version and the next one succeeds; no dataset file is ever written outside the bucket."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from modelsvc.config import load_settings
from modelsvc.dataset import build_dataset, list_versions, load_dataset, read_dataset
from modelsvc.errors import NotFoundError
from tests.feature_data import random_case, write_impressions, write_offline, write_realtime
from tests.fixtures.s3 import S3Service

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def case(workdir: Path) -> tuple[str, str]:
    """Feature tables and impressions in the local warehouse; the day range to build."""
    off, rt, imp = random_case(11, users=20, days=5, impressions=400)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    write_impressions(root, imp)
    days = imp["event_timestamp"].dt.strftime("%Y-%m-%d")
    return days.min(), days.max()


def _no_local_dataset_files(workdir: Path) -> None:
    assert not (workdir / "data" / "datasets").exists()
    assert not [p for p in workdir.rglob("*.parquet") if "warehouse" not in p.parts]
    assert not list(workdir.rglob("manifest.json"))


def test_build_dataset_on_s3_reads_back_like_the_local_build(workdir, case, s3_env: S3Service, s3_bucket: str):
    start, end = case
    remote = load_settings(workdir / "configs", paths={"datasets": f"{s3_bucket}/datasets"},
                           dataset={"file_rows": 90, "row_group_rows": 40})
    on_s3 = build_dataset(remote, start_date=start, end_date=end)
    _no_local_dataset_files(workdir)  # nothing but the bucket held the dataset, not even a temporary copy
    bucket = s3_bucket.removeprefix("s3://")
    keys = [k for k in s3_env.keys(bucket) if not k.endswith("/")]
    prefix = f"datasets/ctr_training/{on_s3.version}/"
    assert keys == sorted(prefix + f for f in ["manifest.json", *(f.path for f in on_s3.files)])
    assert len(on_s3.files) >= 5
    assert all(f.rows <= 90 for f in on_s3.files)

    local = load_settings(workdir / "configs", dataset={"file_rows": 1000})
    here = build_dataset(local, start_date=start, end_date=end)
    assert here.fingerprint == on_s3.fingerprint

    loaded = load_dataset(remote)
    assert loaded.path == f"{s3_bucket}/datasets/ctr_training/{on_s3.version}"
    assert loaded.files == on_s3.files
    for split in (None, "train", "validation", "test"):
        pd.testing.assert_frame_equal(read_dataset(loaded, split=split), read_dataset(here, split=split))
    from modelsvc.training.loop import read_split

    cols = ["event_id", "is_clicked"]
    n = loaded.splits["train"].rows
    pd.testing.assert_frame_equal(read_split(loaded, "train", cols, n // 3, n - 7),
                                  read_split(here, "train", cols, n // 3, n - 7))


def _cli(workdir: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", "from modelsvc.cli import main; main()", *args], cwd=workdir,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_a_build_killed_mid_upload_leaves_no_version_and_the_next_one_succeeds(workdir, case, s3_env: S3Service,
                                                                                s3_bucket: str, monkeypatch):
    start, end = case
    bucket = s3_bucket.removeprefix("s3://")
    env = {**os.environ, **s3_env.env(), "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "MODELSVC_PATHS__DATASETS": f"{s3_bucket}/datasets", "MODELSVC_DATASET__FILE_ROWS": "1"}
    proc = _cli(workdir, env, "build-dataset", "--start-date", start, "--end-date", end, "--json")
    deadline = time.monotonic() + 240
    uploaded: list[str] = []
    while not uploaded and proc.poll() is None and time.monotonic() < deadline:
        uploaded = [k for k in s3_env.keys(bucket, "datasets/") if k.endswith(".parquet")]
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert uploaded, f"no file was uploaded before the build ended (rc {proc.returncode}): {err[-2000:]}"
    assert proc.returncode == -signal.SIGKILL
    left = s3_env.keys(bucket, "datasets/")
    assert [k for k in left if k.endswith(".parquet")]  # the killed build's files are there...
    assert not [k for k in left if k.endswith("manifest.json")]  # ...but never committed

    monkeypatch.setenv("MODELSVC_PATHS__DATASETS", f"{s3_bucket}/datasets")
    settings = load_settings(workdir / "configs")  # the settings the command had
    assert list_versions(settings) == []
    with pytest.raises(NotFoundError, match="dataset 'ctr_training' not found"):
        load_dataset(settings)
    listed = _cli(workdir, env, "datasets", "--json")
    out, err = listed.communicate(timeout=120)
    assert listed.returncode == 0, err
    assert json.loads(out)["versions"] == []

    env["MODELSVC_DATASET__FILE_ROWS"] = "100"
    again = _cli(workdir, env, "build-dataset", "--start-date", start, "--end-date", end, "--json")
    out, err = again.communicate(timeout=240)
    assert again.returncode == 0, err
    built = json.loads(out)
    listed = _cli(workdir, env, "datasets", "list", "--json")  # `datasets list`, as `datasets`
    out, _ = listed.communicate(timeout=120)
    assert [(v["name"], v["version"], v["rows"]) for v in json.loads(out)["versions"]] == [
        ("ctr_training", built["version"], built["rows"])]
    assert load_dataset(settings).version == built["version"]
    _no_local_dataset_files(workdir)


def test_reports_run_history_and_pipeline_state_live_on_s3(workdir, s3_env: S3Service, s3_bucket: str):
    from datetime import date, datetime, timezone

    from modelsvc import incremental
    from modelsvc.history import list_runs, record_run
    from modelsvc.pipeline import PipelineReport

    settings = load_settings(workdir / "configs", paths={"reports": f"{s3_bucket}/reports"})
    assert incremental.load_state(settings) == {}
    incremental.save_state(settings, {"datasets": {"k": {"name": "ctr_training", "version": "v1"}}})
    assert incremental.load_state(settings)["datasets"]["k"]["version"] == "v1"
    report = PipelineReport(start_date=date(2026, 1, 1), end_date=date(2026, 1, 2), steps=[], seconds=1.5,
                            started_at=datetime(2026, 1, 3, tzinfo=timezone.utc))
    where = record_run(settings, report)
    assert where.startswith(f"{s3_bucket}/reports/runs/20260103T000000000000Z-")
    [got] = list_runs(settings)
    assert got.report == report
    bucket = s3_bucket.removeprefix("s3://")
    assert [k for k in s3_env.keys(bucket) if not k.endswith("/")] == sorted(
        ["reports/state/pipeline.json", where.removeprefix(f"{s3_bucket}/")])
    assert not (workdir / "data" / "reports").exists()
