"""Dataset write + one training epoch, on local disk vs on an S3 endpoint (moto's server, started here on loopback).

    python benchmarks/dataset_storage.py --rows 1000000            # local disk, then S3
    python benchmarks/dataset_storage.py --rows 4000000 --only s3

What it times, in CPU seconds of this process (the machine may be shared: wall seconds are printed too, and the
load average), plus the S3 server's own CPU seconds:
- ``write``: ``tests.datasets.write_synthetic_dataset``: synthesize a frame of ``--rows`` impressions and write it
  as a version with ``write_dataset_version`` (the part of ``build-dataset`` after the point-in-time join, which
  on the Hive engine runs on the server); the synthesis is the same on both locations, so the difference between
  them is the storage's;
- ``train``: ``modelsvc.training.train`` for one epoch in Ray Train's local mode (resident data path), which reads
  the version back from the location, fits the preprocessor, trains and logs to a local MLflow store.
A moto server is no real object store: its figures bound the client's cost and
show what crosses the wire, not S3's latency.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _measure(root: str, rows: int, work: Path, server_pid: int | None) -> dict[str, float]:
    from modelsvc import storage
    from modelsvc.config import load_settings
    from modelsvc.training import train
    from tests.datasets import synthetic_frame, write_synthetic_dataset  # noqa: F401

    settings = load_settings(REPO / "configs", paths={"root": root, "state": str(work / "state"),
                                                      "mlflow": str(work / "mlflow")},
                             mlflow={"tracking_uri": f"sqlite:///{work / 'mlflow.db'}"},
                             training={"epochs": 1, "batch_size": 4096}, scaling={"num_workers": 0})
    out: dict[str, float] = {}
    srv0 = _proc_cpu(server_pid) if server_pid else 0.0
    c0, w0 = time.process_time(), time.perf_counter()
    manifest, _ = write_synthetic_dataset(settings, rows=rows, seed=1)
    out["write_cpu_s"], out["write_wall_s"] = time.process_time() - c0, time.perf_counter() - w0
    out["bytes"] = float(sum(size for _, size in storage.list_files(settings.paths.location("datasets"))))
    srv1 = _proc_cpu(server_pid) if server_pid else 0.0
    c0, w0 = time.process_time(), time.perf_counter()
    result = train(settings)
    out["train_cpu_s"], out["train_wall_s"] = time.process_time() - c0, time.perf_counter() - w0
    out["server_cpu_s_write"] = srv1 - srv0
    out["server_cpu_s_train"] = (_proc_cpu(server_pid) - srv1) if server_pid else 0.0
    out["val_auc"] = result.metrics["val_auc"]
    out["files"] = float(len(manifest.data_files()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--only", choices=["local", "s3"], default=None)
    args = ap.parse_args()
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="msbench") as tmp:
        work = Path(tmp)
        # warm-up (imports, first-call costs), not reported: without it the first location measured pays them
        (work / "warm").mkdir()
        _measure(str(work / "warm" / "root"), 5000, work / "warm", None)
        if args.only in (None, "local"):
            (work / "local").mkdir()
            results["local"] = _measure(str(work / "local" / "root"), args.rows, work / "local", None)
        if args.only in (None, "s3"):
            from modelsvc import storage
            from tests.fixtures.s3 import running_s3

            (work / "s3").mkdir()
            with running_s3(work / "s3") as s3:
                os.environ.update(s3.env())
                storage.clear_cache()
                root = f"s3://{s3.create_bucket('bench')}/root"
                results["s3"] = _measure(root, args.rows, work / "s3", s3.pid)
    print(json.dumps({"rows": args.rows, "loadavg": os.getloadavg(), "results": results}, indent=2))


if __name__ == "__main__":
    main()
