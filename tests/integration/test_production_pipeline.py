"""The whole pipeline against the production backends, all at once, configured by environment variables alone
(as the container is): Hive (HiveServer2 = Spark's Thrift server) for the warehouse and Feast's offline store,
Redis for the online store, an MLflow tracking server, and a two-node Ray cluster for training.

Each step runs as its own `modelsvc` process, the way cron or CI runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fixtures.hive import create_database
from tests.fixtures.ray_cluster import node_env

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.hive, pytest.mark.redis]

START, END = "2025-02-01", "2025-02-08"


def _modelsvc(env: dict[str, str], cwd: Path, *args: str, timeout: int = 900) -> dict:
    exe = Path(sys.executable).parent / "modelsvc"
    proc = subprocess.run([str(exe), *args, "--json"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"modelsvc {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


@pytest.fixture
def production_env(workdir, hive_server, redis_server, mlflow_server, ray_cluster) -> dict[str, str]:
    database = create_database(hive_server, prefix="prod")
    env = node_env()  # RAY_AUTH_MODE pinned like the cluster's nodes
    env = {k: v for k, v in env.items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env |= {
        "MODELSVC_WAREHOUSE__ENGINE": "hive",
        "MODELSVC_HIVE__HOST": hive_server.host,
        "MODELSVC_HIVE__PORT": str(hive_server.port),
        "MODELSVC_HIVE__DATABASE": database,
        "MODELSVC_HIVE__USERNAME": "modelsvc",
        "MODELSVC_FEATURES__ONLINE_STORE": "redis",
        "MODELSVC_FEATURES__REDIS__HOST": redis_server.host,
        "MODELSVC_FEATURES__REDIS__PORT": str(redis_server.port),
        "MLFLOW_TRACKING_URI": mlflow_server.url,
        "RAY_ADDRESS": ray_cluster.address,
        "MODELSVC_SCALING__NUM_WORKERS": "2",
        "MODELSVC_SCALING__USE_GPU": "auto",
        "MODELSVC_TRAINING__EPOCHS": "10",  # ~3k train rows over 2 workers: enough optimizer steps
        "MODELSVC_TRAINING__BATCH_SIZE": "256",
        "MODELSVC_MLFLOW__REGISTERED_MODEL": "ctr_model_prod_test",
        # a few thousand impressions: the gate's bounds are about the plumbing here, not model quality
        "MODELSVC_EVALUATION__GATE__MIN_AUC": "0.55",
        "MODELSVC_EVALUATION__GATE__MAX_CALIBRATION_ERROR": "0.2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                    os.environ.get("PYTHONPATH")])),
    }
    return env


def test_pipeline_on_hive_redis_mlflow_server_and_ray_cluster(production_env, workdir, redis_server, mlflow_server):
    env = production_env
    demo = _modelsvc(env, workdir, "demo-data", "--users", "300", "--days", "8", "--start-date", START, "--seed", "5")
    assert demo["tables"]["raw_events"] == demo["events"] > 5000

    doctor = _modelsvc(env, workdir, "doctor", timeout=300)  # exit 0: no check failed
    assert not [c for c in doctor["checks"] if c["status"] == "fail"], doctor

    report = _modelsvc(env, workdir, "run", "--start-date", START, "--end-date", END, timeout=1500)
    assert [s["status"] for s in report["steps"]] == ["ok"] * 6, report
    assert report["promoted_version"] == "1"
    etl = report["steps"][0]["summary"]
    assert etl["engine"] == "hive"
    assert etl["raw_events_read"] == demo["events"]
    assert report["steps"][1]["summary"]["online_store"] == "redis"

    # one finished MLflow run on the server, trained by two workers on the cluster
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    run = client.get_run(report["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params.get("scaling.num_workers") == "2"
    assert run.data.tags["modelsvc.eval.verdict"] == "passed"
    workers = json.loads(run.data.tags["modelsvc.train.workers"])
    assert len({w["node_id"] for w in workers}) == 2, workers  # both nodes trained

    # the promoted model loads back from the registry through the server and scores raw rows
    import pandas as pd

    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    model = mlflow.pyfunc.load_model("models:/ctr_model_prod_test@production")
    scores = model.predict(pd.DataFrame({"total_orders_7d": [1.0], "avg_purchase_value_30d": [None],
                                         "last_seen_platform": ["ios"], "current_page_views_10m": [2.0]}))
    assert 0.0 < float(scores["p_click"].iloc[0]) < 1.0

    # the online store (Redis) holds the keys Feast wrote for this project
    import redis

    r = redis.Redis(host=redis_server.host, port=redis_server.port)
    assert r.dbsize() > 0
