"""`modelsvc build-dataset` end to end at growing sizes, the dataset written to local disk and to an S3 endpoint.

    python benchmarks/build_dataset_scale.py --users 23000 91000           # about 1M and 4M impressions
    python benchmarks/build_dataset_scale.py --users 364000 --only local

For each ``--users`` value, in a temporary folder holding the repo's ``configs/`` and ``feature_repo/``: the demo
data for 28 days (``modelsvc demo-data``), ``etl`` and ``materialize`` (not timed), then ``build-dataset`` over the
28 days as its own process: the point-in-time join (Feast's DuckDB offline store), the checks, the split and the
version's Parquet files, first with ``paths.datasets`` on the local disk, then on an S3 endpoint (moto's server,
started here on loopback: no real network, its own CPU counted apart). Printed per run: impressions, wall seconds,
CPU seconds of the command's process (user + system), impressions per second, the version's files and bytes.
The machine may be shared: the CPU seconds and the load average say more than the wall clock.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.fixtures.s3 import running_s3  # noqa: E402  (moto's server, as the tests and the other benchmarks run it)

MODELSVC = str(Path(sys.executable).parent / "modelsvc")
START, END = "2025-01-01", "2025-01-28"


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _modelsvc(folder: Path, env: dict[str, str], *args: str) -> tuple[dict, float, float]:
    """Run one command with --json; (its result, wall s, CPU s of the process)."""
    c0, w0 = _children_cpu(), time.perf_counter()
    done = subprocess.run([MODELSVC, *args, "--json"], cwd=folder, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - w0, _children_cpu() - c0
    if done.returncode != 0:
        raise SystemExit(f"modelsvc {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout), wall, cpu


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, nargs="+", default=[23_000])
    ap.add_argument("--only", choices=["local", "s3"], default=None)
    args = ap.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_", "AWS_"))}
    rows = []
    with tempfile.TemporaryDirectory(prefix="msbuild-s3") as s3_work, (
            contextlib.nullcontext() if args.only == "local" else running_s3(Path(s3_work))) as s3:
        bucket = s3.create_bucket("bench") if s3 is not None else ""
        for users in args.users:
            with tempfile.TemporaryDirectory(prefix="msbuild") as tmp:
                folder = Path(tmp)
                shutil.copytree(REPO / "configs", folder / "configs")
                shutil.copytree(REPO / "feature_repo", folder / "feature_repo",
                                ignore=shutil.ignore_patterns("data", "__pycache__"))
                _modelsvc(folder, base, "demo-data", "--users", str(users), "--days", "28", "--start-date", START)
                _modelsvc(folder, base, "etl", "--start-date", START, "--end-date", END)
                _modelsvc(folder, base, "materialize", "--end-date", "2025-01-29")
                where = []
                if args.only != "s3":
                    where.append(("local disk", base))
                if s3 is not None:
                    where.append(("S3 endpoint", base | s3.env() | {
                        "MODELSVC_PATHS__DATASETS": f"s3://{bucket}/u{users}/datasets"}))
                for name, env in where:
                    on_s3 = name != "local disk"
                    srv0 = _proc_cpu(s3.pid) if on_s3 else 0.0
                    out, wall, cpu = _modelsvc(folder, env, "build-dataset", "--start-date", START,
                                               "--end-date", END)
                    srv = _proc_cpu(s3.pid) - srv0 if on_s3 else 0.0
                    files = out.get("files") or []
                    row = {"users": users, "impressions": out["rows"], "location": name, "wall_s": round(wall, 2),
                           "cpu_s": round(cpu, 2), "impressions_per_s": round(out["rows"] / wall),
                           "files": len(files), "bytes": sum(f.get("bytes", 0) for f in files),
                           "s3_server_cpu_s": round(srv, 2), "load": [round(x, 1) for x in os.getloadavg()]}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    print("\n| users | impressions | location | wall s | CPU s | impressions/s | files | MB | S3 server CPU s | load |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['users']:,} | {r['impressions']:,} | {r['location']} | {r['wall_s']} | {r['cpu_s']} | "
              f"{r['impressions_per_s']:,} | {r['files']} | {r['bytes'] / 1e6:.1f} | {r['s3_server_cpu_s']} | "
              f"{' / '.join(map(str, r['load']))} |")


if __name__ == "__main__":
    main()
