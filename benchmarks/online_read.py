"""CPU per online read: modelsvc's reader (``OnlineFeatures``) against Feast's ``OnlineStore.online_read`` per view,
on a store built by ``benchmarks/serve_latency.py --work DIR``; both must return the same values and timestamps.

    python benchmarks/online_read.py --work /tmp/modelsvc-bench-work                  # SQLite
    python benchmarks/online_read.py --work DIR --redis-port 6379   # Redis, materialized into that server first

Bounded: --reads reads of 100 users and of 1 user per reader.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the state folder of serve_latency.py")
    ap.add_argument("--redis-port", type=int, default=None, help="read Redis on 127.0.0.1:PORT (materialized here)")
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--reads", type=int, default=50)
    args = ap.parse_args()

    os.chdir(args.work)
    from modelsvc.config import load_settings
    from modelsvc.features import materialize
    from modelsvc.features.online_read import OnlineFeatures

    over: dict[str, Any] = {}
    if args.redis_port:
        over = {"features": {"online_store": "redis", "redis": {"port": args.redis_port}},
                "paths": {"feast": str(args.work / "data" / "feast-redis")}}
    settings = load_settings(args.work / "configs", **over)
    if args.redis_port:
        materialize(settings)
    ours, feast = OnlineFeatures.open(settings), OnlineFeatures.open(settings)
    feast._redis = feast._sqlite = None  # Feast's online_read, view by view
    users = list(range(1, args.users + 1))
    if ours.read_raw(users) != feast.read_raw(users):
        raise SystemExit("the readers disagree")
    print(f"same values and timestamps for {len(users)} users; load average {os.getloadavg()[0]:.1f}")
    for label, reader in (("modelsvc", ours), ("feast online_read", feast)):
        for size in (100, 1):
            t0 = time.process_time()
            for i in range(args.reads):
                reader.read_raw(users[(i * 37) % (len(users) - size):][:size])
            ms = (time.process_time() - t0) / args.reads * 1e3
            print(f"{label:18s} {size:3d} users: {ms:6.3f} ms CPU per read")


if __name__ == "__main__":
    main()
