"""Each service fixture starts a real, working service."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.redis
def test_redis_server_ping_set_get(redis_server):
    import redis

    client = redis.Redis(host=redis_server.host, port=redis_server.port, socket_timeout=5)
    assert client.ping() is True
    client.set("modelsvc:smoke", "42")
    assert client.get("modelsvc:smoke") == b"42"
    client.delete("modelsvc:smoke")
    client.close()


def test_mlflow_server_logs_a_metric_through_the_server(mlflow_server, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.url, registry_uri=mlflow_server.url)
    exp_id = client.create_experiment("smoke-services")
    run = client.create_run(exp_id)
    client.log_metric(run.info.run_id, "auc", 0.75)
    (tmp_path / "note.txt").write_text("hello")
    client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
    client.set_terminated(run.info.run_id)

    fetched = client.get_run(run.info.run_id)
    assert fetched.data.metrics["auc"] == 0.75
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["note.txt"]
    # artifacts are proxied by the server into its own artifacts destination, not written by this client
    assert fetched.info.artifact_uri.startswith("mlflow-artifacts:")
    assert list(mlflow_server.artifacts.rglob("note.txt"))


RAY_PROBE = """
import sys, ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

ray.init(address=sys.argv[1], log_to_driver=False)
nodes = [n for n in ray.nodes() if n["Alive"]]
assert len(nodes) == 2, nodes
assert ray.cluster_resources().get("CPU") == 2.0, ray.cluster_resources()


@ray.remote(num_cpus=1)
def where():
    return ray.get_runtime_context().get_node_id()


refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
        for n in nodes]
assert sorted(ray.get(refs, timeout=120)) == sorted(n["NodeID"] for n in nodes)
print("ok", len(nodes))
"""


@pytest.mark.slow
def test_ray_cluster_has_two_nodes_and_runs_a_task_on_each(ray_cluster):
    # a separate process, as a user's driver would be: this pytest process may already run a local Ray
    import subprocess
    import sys

    from tests.fixtures.ray_cluster import node_env

    proc = subprocess.run([sys.executable, "-c", RAY_PROBE, ray_cluster.address], capture_output=True, text=True,
                          timeout=300, env=node_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ok 2"
