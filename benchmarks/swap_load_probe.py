"""What a model swap's load costs the requests of the serving process, the two mechanisms alone (in process, on the
store a ``serve_latency.py`` run built under ``--work``):

- a full pass of the cyclic GC over the serving process's heap (the app started, a model loaded, 200 requests),
  without and with the start-up ``gc.freeze``: CPU-ms and wall ms;
- a GIL probe: a 'request' (wake from a 2 ms sleep, then about 0.5 ms of Python; the wait for the GIL after the
  wake counts) timed with no loader, and beside a thread loading the production version again and again (quiet,
  as a swap does) at the default 5 ms switch interval and at the 1 ms a swap uses. Variants alternate in 2 s blocks
  so the machine's other load hits them alike.

    python benchmarks/swap_load_probe.py --work DIR [--rounds 8]
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np


def gc_cost(settings: object) -> None:
    from fastapi.testclient import TestClient

    from modelsvc.serving.app import create_app

    with TestClient(create_app(settings)) as client:  # type: ignore[arg-type]
        for _ in range(200):
            client.post("/v1/predict", json={"user_ids": [5]})
        gc.unfreeze()  # the heap as the code before the start-up freeze left it
        for label in ("no freeze", "no freeze", "frozen", "frozen"):
            if label == "frozen":
                gc.freeze()
            c0, w0 = time.process_time(), time.perf_counter()
            gc.collect()
            print(f"{label:10s} tracked {len(gc.get_objects()):7d} frozen {gc.get_freeze_count():7d}: full pass "
                  f"{(time.process_time() - c0) * 1e3:7.1f} CPU-ms {(time.perf_counter() - w0) * 1e3:7.1f} ms",
                  flush=True)


def _work() -> int:
    x = 0
    for i in range(6000):
        x += i * i
    return x


def gil_probe(settings: object, rounds: int) -> None:
    from modelsvc.serving import sources
    from modelsvc.serving.model import SWAP_SWITCH_INTERVAL_S, LoadedModel

    ref = sources.model_ref(settings)  # type: ignore[arg-type]
    LoadedModel.load(settings, ref)  # type: ignore[arg-type]

    def block(variant: str, seconds: float = 2.0) -> tuple[list[float], int]:
        stop, loads = threading.Event(), [0]

        def loader() -> None:
            while not stop.is_set():
                LoadedModel.load(settings, ref, quiet=True)  # type: ignore[arg-type]
                loads[0] += 1

        before = sys.getswitchinterval()
        if variant == "1ms":
            sys.setswitchinterval(SWAP_SWITCH_INTERVAL_S)
        thread = threading.Thread(target=loader)
        if variant != "idle":
            thread.start()
        lat: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t0 = time.perf_counter() + 0.002
            time.sleep(0.002)
            _work()
            lat.append(time.perf_counter() - t0)
        stop.set()
        if variant != "idle":
            thread.join()
        sys.setswitchinterval(before)
        return lat, loads[0]

    res: dict[str, list[float]] = {"idle": [], "5ms": [], "1ms": []}
    loads = dict.fromkeys(res, 0)
    for _ in range(rounds):
        for variant in res:
            lat, n = block(variant)
            res[variant] += lat
            loads[variant] += n
    for variant, lat in res.items():
        a = np.array(lat) * 1e3
        print(f"{variant:5s} requests {len(a):5d} loads {loads[variant]:3d}: p50 {np.percentile(a, 50):.2f} ms "
              f"p99 {np.percentile(a, 99):.2f} ms max {a.max():.1f} ms", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="a serve_latency.py --work folder (its store)")
    ap.add_argument("--rounds", type=int, default=8)
    args = ap.parse_args()
    os.chdir(args.work)
    from modelsvc.config import load_settings

    settings = load_settings(args.work / "configs")
    gc_cost(settings)
    gil_probe(settings, args.rounds)
    print("load average {:.2f} {:.2f} {:.2f}; {} cores".format(*os.getloadavg(), os.cpu_count()))


if __name__ == "__main__":
    main()
