"""Prediction latency and throughput: `modelsvc serve` vs the two-hop baseline (`feast serve`, then
`mlflow models serve`, called one after the other by the client), with the SQLite and the Redis online store.

Everything runs on 127.0.0.1: a throw-away redis-server, the servers as subprocesses, the load generator in this
process (threads with keep-alive connections). Every load is bounded in seconds and requests and stops by itself.

Loads, per setup and store:
- paced: 1 user per request at --rate requests/s, then 100 users per request at --rate-100 requests/s
  (p50, p99, the rate reached);
- closed loop: --connections connections sending as fast as answers come, 1 user, then 100 users (throughput).
Then a model swap under the paced 1-user load (Redis, modelsvc): the alias moves to a new version; the latency of
the requests around the swap and the requests in flight when it happened.

    python benchmarks/serve_latency.py                    # about 4 minutes (building the store: ~1.5 of them)
    python benchmarks/serve_latency.py --seconds 3 --skip-baseline
    python benchmarks/serve_latency.py --before-src /tmp/old/src   # also "before": another checkout's code

With ``--before-src``, a second model is trained by that source tree's code (its pyfunc bundles that code) and
served by it (``modelsvc serve --run-id``), measured in the same run as this tree's: before and after under the
same machine load.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def process(cmd: list[str], *, env: dict[str, str], cwd: Path, log: Path, ready: Any, what: str,
            timeout: float = 180) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd`` in its own process group; wait until ``ready()``; stop the group at the end."""
    fh = log.open("ab")
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{what} exited ({proc.returncode}); log: {log}\n{log.read_text()[-3000:]}")
            with contextlib.suppress(Exception):
                if ready():
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} not ready after {timeout}s; log: {log}")
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        fh.close()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of these processes and their children (uvicorn / gunicorn workers)."""
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc = psutil.Process(pid)
            for p in [proc, *proc.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    t = p.cpu_times()
                    total += t.user + t.system
    return total


def http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    finally:
        conn.close()


# -- the store ---------------------------------------------------------------------------------------------------

def build(work: Path, users: int, redis_port: int) -> dict[str, Any]:
    """Demo data ending yesterday, ETL, dataset, a 1-epoch model in production, the online store materialized now
    in SQLite and in Redis (separate Feast registries)."""
    from modelsvc.config import load_settings
    from modelsvc.dataset import build_dataset
    from modelsvc.demo import generate_demo_data
    from modelsvc.etl import run_etl
    from modelsvc.features import materialize
    from modelsvc.registry import promote
    from modelsvc.training import train

    shutil.copytree(REPO / "configs", work / "configs")
    shutil.copytree(REPO / "feature_repo", work / "feature_repo", ignore=shutil.ignore_patterns("data", "*.db",
                                                                                                 "__pycache__"))
    os.chdir(work)
    days = 6
    start = date.today() - timedelta(days=days)
    end = date.today() - timedelta(days=1)
    s = load_settings(work / "configs", training={"epochs": 1, "batch_size": 1024}, ray={"num_cpus": 2})
    generate_demo_data(s, users=users, days=days, start_date=start.isoformat(), seed=5)
    run_etl(s, start_date=start, end_date=end)
    build_dataset(s, start_date=start + timedelta(days=1), end_date=end)
    materialize(s)
    redis_over = {"features": {"online_store": "redis", "redis": {"port": redis_port}},
                  "paths": {"feast": str(work / "data" / "feast-redis")}}
    materialize(load_settings(work / "configs", **redis_over))
    run = train(s)
    promote(s, run_id=run.run_id, force=True, reason="benchmark")
    return {"run_id": run.run_id, "tracking_uri": s.tracking_uri()}


def train_before(work: Path, src: Path, redis_port: int, log: Path) -> str:
    """A model trained by the code under ``src`` (1 epoch, another batch size: its own run); its run id."""
    env = service_env(work, "sqlite", redis_port, src=src)
    env.update({"MODELSVC_TRAINING__EPOCHS": "1", "MODELSVC_TRAINING__BATCH_SIZE": "1023",
                "MODELSVC_RAY__NUM_CPUS": "2"})
    with log.open("ab") as fh:
        out = subprocess.run([str(BIN / "modelsvc"), "train", "--config", str(work / "configs"), "--json"], env=env,
                             cwd=work, stdout=subprocess.PIPE, stderr=fh, check=True, timeout=900)
    return str(json.loads(out.stdout)["run_id"])


def service_env(work: Path, store: str, redis_port: int, src: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODELSVC_", "MLFLOW_"))}
    env.update({"MODELSVC_CONFIG_DIR": str(work / "configs"), "MODELSVC_SERVING__RELOAD_INTERVAL_S": "1",
                "MLFLOW_TRACKING_URI": "sqlite:///" + str(work / "data" / "mlflow" / "mlflow.db"),
                "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}"})
    if src is not None:
        env["PYTHONPATH"] = str(src)
    if store == "redis":
        env.update({"MODELSVC_FEATURES__ONLINE_STORE": "redis", "MODELSVC_FEATURES__REDIS__PORT": str(redis_port),
                    "MODELSVC_PATHS__FEAST": str(work / "data" / "feast-redis")})
    return env


def feast_yaml(work: Path, store: str) -> Path:
    return work / "data" / ("feast-redis" if store == "redis" else "feast") / "feature_store.yaml"


# -- clients -----------------------------------------------------------------------------------------------------

class ModelsvcClient:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def __call__(self, users: list[int]) -> str:
        self.conn.request("POST", "/v1/predict", body=json.dumps({"user_ids": users}),
                          headers={"Content-Type": "application/json"})
        resp = self.conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
        return str(json.loads(data)["model_version"])

    def close(self) -> None:
        self.conn.close()


FEATURES = ["total_orders_7d", "avg_purchase_value_30d", "current_page_views_10m", "last_seen_platform"]
NUMERIC = {"total_orders_7d", "avg_purchase_value_30d", "current_page_views_10m"}


class TwoHopClient:
    """The glue a team writes today: Feast's feature server for the values, then MLflow's scoring server."""

    def __init__(self, feast_port: int, mlflow_port: int) -> None:
        self.feast = http.client.HTTPConnection("127.0.0.1", feast_port, timeout=10)
        self.mlflow = http.client.HTTPConnection("127.0.0.1", mlflow_port, timeout=10)

    def __call__(self, users: list[int]) -> str:
        self.feast.request("POST", "/get-online-features", body=json.dumps(
            {"feature_service": "ctr_model_v1", "entities": {"user_id": users}}),
            headers={"Content-Type": "application/json"})
        resp = self.feast.getresponse()
        data = json.loads(resp.read())
        if resp.status != 200:
            raise RuntimeError(f"feast HTTP {resp.status}: {str(data)[:200]}")
        names = data["metadata"]["feature_names"]
        columns = {n: r["values"] for n, r in zip(names, data["results"], strict=True)}
        rows = [[(float(columns[f][i]) if columns[f][i] is not None else None) if f in NUMERIC else columns[f][i]
                 for f in FEATURES] for i in range(len(users))]
        self.mlflow.request("POST", "/invocations", body=json.dumps(
            {"dataframe_split": {"columns": FEATURES, "data": rows}}), headers={"Content-Type": "application/json"})
        resp = self.mlflow.getresponse()
        out = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"mlflow HTTP {resp.status}: {out[:200]!r}")
        return "baseline"

    def close(self) -> None:
        self.feast.close()
        self.mlflow.close()


def run_load(make_client: Any, user_sets: list[list[int]], *, seconds: float, rate: float | None, connections: int,
             max_requests: int) -> dict[str, Any]:
    """``connections`` threads; paced to ``rate`` in total (None: closed loop). Bounded by seconds and requests."""
    results: list[tuple[float, float, bool, str]] = []
    lock = threading.Lock()
    t_start = time.perf_counter()
    t_end = t_start + seconds
    per_conn = max_requests // connections

    def worker(k: int) -> None:
        client = make_client()
        interval = connections / rate if rate else 0.0
        nxt = t_start + k * (interval / connections if rate else 0.0)
        local = []
        for i in range(per_conn):
            now = time.perf_counter()
            if now >= t_end:
                break
            if rate:
                if nxt > now:
                    time.sleep(nxt - now)
                nxt += interval
            t0 = time.perf_counter()
            try:
                version = client(user_sets[(k * 7919 + i) % len(user_sets)])
                local.append((t0, time.perf_counter() - t0, True, version))
            except Exception as exc:  # counted, never raised: the load stops by itself
                local.append((t0, time.perf_counter() - t0, False, type(exc).__name__))
                client.close()
                client = make_client()
        client.close()
        with lock:
            results.extend(local)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    ok = [r[1] for r in results if r[2]]
    return {"requests": len(results), "errors": len(results) - len(ok), "rps": len(ok) / wall,
            "p50_ms": float(np.percentile(ok, 50) * 1e3) if ok else float("nan"),
            "p99_ms": float(np.percentile(ok, 99) * 1e3) if ok else float("nan"), "results": results}


def measure(name: str, make_client: Any, users: list[int], args: argparse.Namespace,
            pids: list[int]) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    singles = [[int(u)] for u in rng.choice(users, 5000)]
    hundreds = [[int(u) for u in rng.choice(users, 100, replace=False)] for _ in range(200)]
    for _ in range(50):  # warm up the connection pools and lazy paths
        make_client()(singles[0])
    rows = []
    cells = [("1 user, paced", singles, args.rate, 2), ("100 users, paced", hundreds, args.rate_100, 2),
             ("1 user, closed loop", singles, None, args.connections),
             ("100 users, closed loop", hundreds, None, args.connections)]
    for label, sets, rate, conns in cells:
        cpu0 = cpu_seconds(pids)
        r = run_load(make_client, sets, seconds=args.seconds, rate=rate, connections=conns,
                     max_requests=args.max_requests)
        # server CPU per request: what an idle core would spend, whatever else runs on a shared machine
        r["server_cpu_ms"] = (cpu_seconds(pids) - cpu0) / max(r["requests"], 1) * 1e3
        r.pop("results")
        rows.append({"setup": name, "load": label + (f" at {rate:g}/s" if rate else f" x{conns}"), **r})
        print(f"  {name:28s} {rows[-1]['load']:28s} p50 {r['p50_ms']:7.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
              f"{r['rps']:7.1f} req/s  server CPU {r['server_cpu_ms']:.2f} ms/req  errors {r['errors']}", flush=True)
    return rows


def swap_under_load(port: int, users: list[int], info: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Paced 1-user load; meanwhile the alias moves ``--swaps`` times, every ``--swap-every`` seconds, between a new
    version of the same run and the one serving (each move a real load and swap). The swap windows (from a move
    until 0.5 s after the first answer of the version moved to) against the requests outside them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    mlflow.set_tracking_uri(info["tracking_uri"])
    client = MlflowClient(tracking_uri=info["tracking_uri"])
    singles = [[int(u)] for u in np.random.default_rng(1).choice(users, 5000)]
    box: dict[str, Any] = {}
    lead_s = 2.0

    def load() -> None:
        box.update(run_load(lambda: ModelsvcClient(port), singles,
                            seconds=lead_s + args.swaps * args.swap_every + 1.5, rate=args.rate, connections=2,
                            max_requests=args.max_requests))

    serving = str(client.get_model_version_by_alias("ctr_model", "production").version)
    version = str(mlflow.register_model(f"runs:/{info['run_id']}/model", "ctr_model").version)
    t = threading.Thread(target=load)
    t.start()
    time.sleep(lead_s)
    moves = []
    for i in range(args.swaps):
        target = version if i % 2 == 0 else serving
        moves.append((time.perf_counter(), target))
        client.set_registered_model_alias("ctr_model", "production", target)
        time.sleep(args.swap_every)
    t.join()
    client.set_registered_model_alias("ctr_model", "production", serving)
    res = sorted(box["results"])
    windows, seen = [], []
    for t_move, target in moves:
        first = next((r for r in res if r[0] >= t_move and r[2] and r[3] == target), None)
        if first is None:
            return {"swapped": False, "moves": len(moves), "seen": len(seen)}
        windows.append((t_move, first[0] + 0.5))
        seen.append(first[0] - t_move)
    inside = [r for r in res if any(a <= r[0] <= b for a, b in windows)]
    outside = [r[1] for r in res if r[2] and r[0] >= res[0][0] + 0.5 and not any(a <= r[0] <= b for a, b in windows)]
    around = [r[1] for r in inside if r[2]]
    in_flight = sum(1 for a, _ in windows for r in res if r[0] <= a <= r[0] + r[1])
    return {"swapped": True, "swaps": len(moves), "to_version": version, "seen_after_s": float(np.median(seen)),
            "errors": box["errors"], "requests": box["requests"],
            "before_p50_ms": float(np.percentile(outside, 50) * 1e3),
            "before_p99_ms": float(np.percentile(outside, 99) * 1e3),
            "before_max_ms": float(max(outside) * 1e3), "before_requests": len(outside),
            "swap_p50_ms": float(np.percentile(around, 50) * 1e3), "swap_p99_ms": float(np.percentile(around, 99)
                                                                                         * 1e3),
            "swap_max_ms": float(max(around) * 1e3), "swap_window_requests": len(around),
            "in_flight_at_moves": in_flight}


def swap_only(args: argparse.Namespace) -> None:
    """``--swap-only``: the swap measurement alone, on the SQLite store of an earlier run's ``--work`` folder."""
    work = args.work
    info = json.loads((work / "built.json").read_text())
    users = list(range(1, int(info.get("users", args.users)) + 1))
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    port = free_port()
    env = service_env(work, "sqlite", 0)
    with process([str(BIN / "modelsvc"), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                 env=env, cwd=work, log=logs / "serve-swap.log", ready=lambda: http_ok(port, "/readyz"),
                 what="modelsvc serve") as served:
        cpu0 = cpu_seconds([served.pid])
        swap = swap_under_load(port, users, info, args)
        swap["server_cpu_s"] = cpu_seconds([served.pid]) - cpu0
    load = os.getloadavg()
    swap["load_average"] = [round(x, 2) for x in load]
    print(json.dumps(swap))
    if args.json_out:
        args.json_out.write_text(json.dumps({"swap": swap}, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=5.0, help="per load cell")
    ap.add_argument("--max-requests", type=int, default=20_000, help="per load cell")
    ap.add_argument("--rate", type=float, default=200.0, help="paced requests/s with 1 user")
    ap.add_argument("--rate-100", type=float, default=20.0, help="paced requests/s with 100 users")
    ap.add_argument("--connections", type=int, default=4, help="closed-loop connections")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--swaps", type=int, default=1, help="alias moves during the swap measurement")
    ap.add_argument("--swap-every", type=float, default=2.5, help="seconds between two alias moves")
    ap.add_argument("--swap-only", action="store_true",
                    help="only the swap measurement (SQLite store), on the store of an earlier run's --work")
    ap.add_argument("--before-src", type=Path, default=None,
                    help="also measure 'modelsvc serve (before)': the modelsvc package under this src folder, "
                         "serving a model it trained")
    ap.add_argument("--stores", default="sqlite,redis")
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--work", type=Path, default=None,
                    help="state folder; when it holds a store built by an earlier run, reuse it (no rebuild)")
    args = ap.parse_args()
    if args.swap_only:
        if args.work is None or not (args.work / "built.json").is_file():
            ap.error("--swap-only needs --work: a folder an earlier run built its store in")
        swap_only(args)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="modelsvc-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    built = work / "built.json"
    redis_port = free_port()
    rows: list[dict[str, Any]] = []
    swap: dict[str, Any] = {}
    try:
        with process([shutil.which("redis-server") or "redis-server", "--bind", "127.0.0.1", "--port",
                      str(redis_port), "--save", "", "--appendonly", "no"], env=dict(os.environ), cwd=work,
                     log=logs / "redis.log", ready=lambda: socket.create_connection(("127.0.0.1", redis_port),
                                                                                    timeout=1).close() is None,
                     what="redis-server"):
            t0 = time.perf_counter()
            if built.is_file():  # the SQLite store and MLflow are on disk; Redis is new: materialize it again
                info = json.loads(built.read_text())
                os.chdir(work)
                from modelsvc.config import load_settings
                from modelsvc.features import materialize

                shutil.rmtree(work / "data" / "feast-redis", ignore_errors=True)
                materialize(load_settings(work / "configs", features={"online_store": "redis",
                                                                      "redis": {"port": redis_port}},
                                          paths={"feast": str(work / "data" / "feast-redis")}))
            else:
                info = build(work, args.users, redis_port)
                built.write_text(json.dumps({**info, "users": args.users}))
            before_run = None
            if args.before_src is not None:
                before_src = args.before_src.resolve()
                if info.get("before_src") == str(before_src):
                    before_run = info["before_run_id"]
                else:
                    before_run = train_before(work, before_src, redis_port, logs / "train-before.log")
                    info.update(before_src=str(before_src), before_run_id=before_run)
                    built.write_text(json.dumps({**info, "users": info.get("users", args.users)}))
            users = list(range(1, int(info.get("users", args.users)) + 1))
            print(f"store built in {time.perf_counter() - t0:.0f}s under {work}", flush=True)
            for store in args.stores.split(","):
                env = service_env(work, store, redis_port)
                port = free_port()
                with process([str(BIN / "modelsvc"), "serve", "--host", "127.0.0.1", "--port", str(port),
                              "--workers", "1"], env=env, cwd=work, log=logs / f"serve-{store}.log",
                             ready=lambda p=port: http_ok(p, "/readyz"), what="modelsvc serve") as served:
                    rows += measure(f"modelsvc serve ({store})", lambda p=port: ModelsvcClient(p), users, args,
                                    [served.pid])
                    if store == "redis":
                        swap = swap_under_load(port, users, info, args)
                        print(f"  swap: {swap}", flush=True)
                if before_run is not None:
                    port = free_port()
                    with process([str(BIN / "modelsvc"), "serve", "--host", "127.0.0.1", "--port", str(port),
                                  "--workers", "1", "--run-id", before_run],
                                 env=service_env(work, store, redis_port, src=args.before_src.resolve()), cwd=work,
                                 log=logs / f"serve-before-{store}.log", ready=lambda p=port: http_ok(p, "/readyz"),
                                 what="modelsvc serve (before)") as served:
                        rows += measure(f"modelsvc serve before ({store})", lambda p=port: ModelsvcClient(p), users,
                                        args, [served.pid])
                if args.skip_baseline:
                    continue
                fport, mport = free_port(), free_port()
                with process([str(BIN / "feast"), "-c", str(work / "feature_repo"), "-f", str(feast_yaml(work, store)),
                              "serve", "-h", "127.0.0.1", "-p", str(fport), "--no-access-log", "--max-requests", "0"],
                             env=env, cwd=work, log=logs / f"feast-{store}.log",
                             ready=lambda p=fport: http_ok(p, "/health"), what="feast serve") as feast, \
                     process([str(BIN / "mlflow"), "models", "serve", "-m", "models:/ctr_model@production",
                              "--env-manager", "local", "-h", "127.0.0.1", "-p", str(mport)], env=env, cwd=work,
                             log=logs / f"mlflow-{store}.log", ready=lambda p=mport: http_ok(p, "/ping"),
                             what="mlflow models serve") as scoring:
                    rows += measure(f"feast serve + mlflow ({store})", lambda f=fport, m=mport: TwoHopClient(f, m),
                                    users, args, [feast.pid, scoring.pid])
    finally:
        load = os.getloadavg()
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {os.cpu_count()} cores; logs under {logs}")
    print()
    print("| setup | load | p50 ms | p99 ms | req/s | server CPU ms/req | errors |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setup']} | {r['load']} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['rps']:.0f} | "
              f"{r['server_cpu_ms']:.2f} | {r['errors']} |")
    if args.json_out:
        args.json_out.write_text(json.dumps({"rows": rows, "swap": swap}, indent=2))


if __name__ == "__main__":
    main()
