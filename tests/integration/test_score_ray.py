"""``modelsvc score`` of a large range on the two-node ``ray_cluster`` fixture: actors (one per CPU, one per node) load
the model once, each day is read, joined and scored on a worker, and the ``predictions`` table the driver writes is
row for row the one the local path wrote (a day without impressions included).

The Ray scoring runs in a subprocess (``modelsvc score --json``), as users run it and as test_ray_cluster.py does:
this pytest process may already hold a local Ray from other tests, which ``score`` would reuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tests.fixtures.ray_cluster import node_env
from tests.serving_support import DATASET_END, DATASET_START, DAYS, START, copy_project

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

SCORE_START, SCORE_END = "2025-03-02", "2025-03-07"  # the demo's raw data ends on 03-06: 03-07 has no impressions
FAST = {"training": {"epochs": 1, "batch_size": 256, "early_stopping_patience": 5}}


def _predictions(root: Path) -> pd.DataFrame:
    import pyarrow.dataset as ds

    table = ds.dataset(root / "data" / "warehouse" / "predictions", format="parquet", partitioning="hive").to_table()
    df = table.to_pandas()
    df["ds"] = df["ds"].astype(str)
    return df.sort_values("event_id", ignore_index=True)


def _assert_same_rows(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Every row and column equal; ``p_click`` to float32 rounding: the torch model computes in float32, and a
    matrix product's last bit depends on the batch (a day on a worker, the range here) and on the thread count
    (measured: at most 1.5e-8, on a few rows in 10^4), far below the 1e-6 that serve, predict and score agree to."""
    pd.testing.assert_frame_equal(got.drop(columns="p_click"), expected.drop(columns="p_click"), check_exact=True)
    diff = (got["p_click"] - expected["p_click"]).abs()
    assert diff.max() <= 1e-7, got.loc[diff.idxmax()]


def test_score_on_the_ray_cluster_writes_the_rows_of_the_local_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                      ray_cluster) -> None:
    from modelsvc.config import load_settings
    from modelsvc.dataset import build_dataset
    from modelsvc.demo import generate_demo_data
    from modelsvc.etl import run_etl
    from modelsvc.serving import score
    from modelsvc.training import train

    root = tmp_path / "project"
    copy_project(root)
    monkeypatch.chdir(root)
    settings = load_settings(root / "configs", **FAST)
    generate_demo_data(settings, users=300, days=DAYS, start_date=START, seed=3)
    run_etl(settings, start_date=START, end_date=DATASET_END)
    build_dataset(settings, start_date=DATASET_START, end_date=DATASET_END)
    run_id = train(settings).run_id  # the real torch model: a batch per day must score as one batch for the range

    local = score(settings, start_date=SCORE_START, end_date=SCORE_END, run_id=run_id)
    assert local.ray_actors == 0
    assert local.rows > 0
    expected = _predictions(root)
    assert sorted(set(expected["ds"])) == ["2025-03-02", "2025-03-03", "2025-03-04", "2025-03-05", "2025-03-06"]

    env = {k: v for k, v in node_env().items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env |= {"RAY_ADDRESS": ray_cluster.address, "MODELSVC_SERVING__SCORE_RAY_MIN_DAYS": "3"}
    proc = subprocess.run([str(Path(sys.executable).parent / "modelsvc"), "score", "--start-date", SCORE_START,
                           "--end-date", SCORE_END, "--run-id", run_id, "--json"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    on_ray = json.loads(proc.stdout)
    assert on_ray["ray_actors"] == 2  # one per CPU of the two 1-CPU nodes
    assert on_ray["rows"] == local.rows
    assert on_ray["days"] == [d.isoformat() for d in local.days]
    assert on_ray["model_version"] == local.model_version == f"run:{run_id}"
    assert on_ray["missing_share"] == pytest.approx(local.missing_share, abs=1e-12)
    assert on_ray["mean_p_click"] == pytest.approx(local.mean_p_click, rel=0, abs=1e-9)
    _assert_same_rows(_predictions(root), expected)

    # a range shorter than serving.score_ray_min_days stays in the process, cluster or not
    short = subprocess.run([str(Path(sys.executable).parent / "modelsvc"), "score", "--start-date", SCORE_START,
                            "--end-date", SCORE_START, "--run-id", run_id, "--json"], cwd=root,
                           env=env | {"MODELSVC_SERVING__SCORE_RAY_MIN_DAYS": "2"}, capture_output=True, text=True,
                           timeout=300)
    assert short.returncode == 0, short.stderr[-3000:]
    assert json.loads(short.stdout)["ray_actors"] == 0
    _assert_same_rows(_predictions(root), expected)

    # an actor that cannot load the model: the modelsvc error it raised, its exit code, nothing written
    missing = "0" * 32
    failed = subprocess.run([str(Path(sys.executable).parent / "modelsvc"), "score", "--start-date", SCORE_START,
                             "--end-date", SCORE_END, "--run-id", missing], cwd=root, env=env, capture_output=True,
                            text=True, timeout=300)
    assert failed.returncode == 66, failed.stderr[-3000:]
    assert f"Error: model runs:/{missing}/model cannot be loaded" in failed.stderr
    _assert_same_rows(_predictions(root), expected)
