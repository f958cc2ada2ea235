"""``train`` joins an existing Ray cluster (``RAY_ADDRESS``) and spreads its workers over the two nodes of the
``ray_cluster`` fixture (1 CPU each), logging ONE MLflow run.

The training runs in a subprocess (``modelsvc train --json``), as users run it: this pytest process
may already hold a local Ray from other tests, which ``train`` would reuse.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from modelsvc.config import load_settings
from tests.datasets import write_synthetic_dataset
from tests.fixtures.ray_cluster import node_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TRAIN_ENV = {
    "MODELSVC_SCALING__NUM_WORKERS": "2",
    "MODELSVC_SCALING__CPUS_PER_WORKER": "1",
    "MODELSVC_SCALING__USE_GPU": "false",
    "MODELSVC_TRAINING__EPOCHS": "2",
    "MODELSVC_TRAINING__BATCH_SIZE": "128",
    "MODELSVC_TRAINING__EARLY_STOPPING_PATIENCE": "5",
}


def _alive_node_ids(address: str) -> set[str]:
    """Node ids of the cluster's alive nodes, asked of the GCS from a subprocess (this process never joins)."""
    code = ("import sys, json\n"
            "from ray._raylet import GcsClient\n"
            "nodes = GcsClient(address=sys.argv[1]).get_all_node_info()\n"
            "print(json.dumps([k.hex() for k, n in nodes.items() if n.state == 0]))\n")
    out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True, timeout=60,
                         env=node_env())
    assert out.returncode == 0, out.stderr[-2000:]
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_train_on_the_two_node_cluster_uses_both_nodes_and_logs_one_run(workdir, ray_cluster):
    settings = load_settings(workdir / "configs")
    write_synthetic_dataset(settings, rows=1500, seed=5)
    env = {k: v for k, v in node_env().items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env |= TRAIN_ENV | {"RAY_ADDRESS": ray_cluster.address}

    proc = subprocess.run([str(Path(sys.executable).parent / "modelsvc"), "train", "--json"], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["num_workers"] == 2
    assert out["epochs_run"] == 2

    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)
    exp = client.get_experiment_by_name(settings.mlflow.experiment)
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_id for r in runs] == [out["run_id"]]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["scaling.num_workers"] == "2"
    assert [m.step for m in client.get_metric_history(out["run_id"], "val_auc")] == [0, 1]

    workers = json.loads(run.data.tags["modelsvc.train.workers"])
    assert [w["rank"] for w in workers] == [0, 1]
    # one rank on each node of the cluster: both nodes did work
    assert {w["node_id"] for w in workers} == _alive_node_ids(ray_cluster.address)
    assert len({w["pid"] for w in workers}) == 2
