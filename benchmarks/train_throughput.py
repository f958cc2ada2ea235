"""Training throughput: Ray Data per-batch loop vs a resident-tensor loop vs modelsvc's path inside Ray Train.

Run (CPU):   python benchmarks/train_throughput.py --rows 200000
Run (GPU):   python benchmarks/train_throughput.py --rows 5000000 --device cuda --batch-sizes 256,8192
Without MLflow installed (the GPU image), (c) runs the same Ray Train workers without the MLflow run.
Add ``--ttq-rows N`` to also measure time to quality (validation AUC within 0.01 of the oracle) with ``train``.
Add ``--s3`` to put the dataset on an S3 API server (moto's, started on loopback as the tests do): (c)'s workers
then read their files and row groups from ``s3://``, (a) and (b) keep the same rows in memory.

Measured, in one process: (a) ``ray.data.from_pandas(...).iter_torch_batches(batch_size=B)`` feeding the MLP
(the common template's design), (b) a plain PyTorch loop over the same rows resident on the device, (c)
``modelsvc.training.train`` (Ray Train V2 worker, resident shard, randperm batches) — each at every batch size,
same model. Then Ray's fixed cost (``ray.init`` and a trivial ``TorchTrainer.fit``) and modelsvc's overhead on top
(``train`` wall time minus its epochs minus the trivial fit), and the same trivial fit in Ray Train's local mode
(``num_workers=0``: the function in this process). ``--num-workers 0`` runs (c) in local mode. Everything runs
in a temporary folder.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # tests.datasets: the synthetic dataset writer


DATASETS: dict[str, str] = {}  # --s3: {"datasets": "s3://bucket/datasets"}


def _settings(root: Path, **over):
    from modelsvc.config import load_settings

    return load_settings(REPO / "configs", paths={"root": str(root), **DATASETS}, **over)


def bench_ray_data(df, pre, model_fn, batch_size: int, device, max_s: float) -> float:
    import ray
    import torch

    from modelsvc.training.loop import to_tensors

    num, cat, y = to_tensors(pre, df, "is_clicked")
    cols = {f"n{i}": num[:, i] for i in range(num.shape[1])}
    cols |= {f"c{i}": cat[:, i] for i in range(cat.shape[1])}
    cols["y"] = y
    import pandas as pd

    ds = ray.data.from_pandas(pd.DataFrame(cols))
    model = model_fn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    n_num, n_cat = num.shape[1], cat.shape[1]
    seen, t0 = 0, time.perf_counter()
    it = iter(ds.iter_torch_batches(batch_size=batch_size, device=str(device)))
    for batch in it:
        xn = torch.stack([batch[f"n{i}"] for i in range(n_num)], dim=1).float()
        xc = torch.stack([batch[f"c{i}"] for i in range(n_cat)], dim=1).long()
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(xn, xc), batch["y"].float())
        loss.backward()
        opt.step()
        seen += int(batch["y"].shape[0])
        if time.perf_counter() - t0 > max_s:
            break
    _sync(device)
    rate = seen / (time.perf_counter() - t0)
    it.close()  # stop Ray Data's background execution before the next measurement
    del it, ds
    import gc

    gc.collect()
    return rate


def bench_resident(df, pre, model_fn, batch_size: int, device, max_s: float) -> float:
    import torch

    from modelsvc.training.loop import ResidentBatches, to_tensors, train_one_epoch

    batches = ResidentBatches(*to_tensors(pre, df, "is_clicked"), batch_size=batch_size, seed=0, rank=0,
                              device=device)
    model = model_fn().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    train_one_epoch(model, opt, _Limited(batches, 3), 0)  # warm-up
    seen, t0, epoch = 0, time.perf_counter(), 0
    while time.perf_counter() - t0 < max_s and epoch < 50:
        _, n = train_one_epoch(model, opt, batches, epoch)
        seen += n
        epoch += 1
    _sync(device)
    return seen / (time.perf_counter() - t0)


class _Limited:
    def __init__(self, batches, n: int) -> None:
        self.batches, self.n = batches, n

    def epoch(self, epoch: int):
        for i, b in enumerate(self.batches.epoch(epoch)):
            if i >= self.n:
                return
            yield b


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_modelsvc(settings, use_mlflow: bool):
    """(c): ``modelsvc.training.train`` (MLflow run, pyfunc logged); without MLflow (a GPU image that lacks it) the
    same Ray Train workers through ``fit_workers``. Returns (median epoch samples/s, wall s, epoch s, data path)."""
    from modelsvc.dataset import load_dataset
    from modelsvc.training.trainer import _fit_preprocessor, fit_workers, run_name_for

    t0 = time.perf_counter()
    if use_mlflow:
        from modelsvc.training import train

        r = train(settings)
        history = [h.model_dump() for h in r.history]
        data_path = r.data_path
    else:
        manifest = load_dataset(settings)
        pre, n = _fit_preprocessor(manifest)
        _, state = fit_workers(settings, manifest, pre, n, run_name_for(settings, manifest), None)
        history, data_path = state["history"], state["data_path"]
    wall = time.perf_counter() - t0
    rate = sorted(h["samples_per_s"] for h in history)[len(history) // 2]
    return rate, wall, sum(h["epoch_time_s"] for h in history), data_path


def trivial_fit(storage: str, settings, workers: int = 1) -> float:
    """One report from one worker, with the controller's poll interval modelsvc uses (``ray.poll_interval_s``);
    ``workers=0``: Ray Train's local mode (no worker actor, no controller)."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from modelsvc.training.ray_runtime import controller_env as _controller_env

    def noop(config):
        import ray.train

        ray.train.report({"ok": 1})

    t0 = time.perf_counter()
    with _controller_env(settings):
        TorchTrainer(noop, scaling_config=ScalingConfig(num_workers=workers),
                     run_config=RunConfig(name=f"trivial-{time.time_ns()}", storage_path=storage)).fit()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000, help="synthetic dataset rows (70%% train)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-sizes", default="256,4096")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of the modelsvc train runs")
    ap.add_argument("--max-s", type=float, default=20.0, help="time cap per (a)/(b) measurement")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads for (a)/(b) = Ray worker CPUs")
    ap.add_argument("--ttq-rows", type=int, default=0, help="rows for the time-to-quality run (0: skip)")
    ap.add_argument("--data-paths", default="resident",
                    help="(c) once per data path: resident, streaming, auto (comma-separated)")
    ap.add_argument("--num-workers", default="1", help="(c) scaling.num_workers: 1 (a Ray worker), 0 (local mode)")
    ap.add_argument("--s3", action="store_true", help="the dataset on a local S3 API server (moto[server])")
    ap.add_argument("--no-mlflow", action="store_true",
                    help="(c) without the MLflow run and model logging (implied when mlflow is not installed)")
    args = ap.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = Path(tempfile.mkdtemp(prefix="modelsvc-bench-"))
    try:
        if args.s3:
            from modelsvc import storage
            from tests.fixtures.s3 import running_s3

            (root / "s3").mkdir()
            with running_s3(root / "s3") as s3:
                os.environ.update(s3.env())  # before ray.init: the workers get the endpoint and keys too
                storage.clear_cache()
                DATASETS["datasets"] = f"s3://{s3.create_bucket('bench')}/datasets"
                _run(args, root)
        else:
            _run(args, root)
    finally:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


def _run(args, root: Path) -> None:
    import importlib.util

    import ray
    import torch

    from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from modelsvc.metrics import rank_auc as roc_auc
    from modelsvc.training import train
    from modelsvc.training.model import build_model
    from modelsvc.training.preprocessing import Preprocessor
    from tests.datasets import write_synthetic_dataset

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    use_gpu = args.device == "cuda"
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    base = _settings(root, scaling={"use_gpu": use_gpu, "cpus_per_worker": args.threads})
    _manifest, df = write_synthetic_dataset(base, rows=args.rows, seed=0)
    train_df = df[df["split"] == "train"]
    pre = Preprocessor.fit(train_df, NUMERIC_FEATURES, CATEGORICAL_FEATURES)

    def model_fn():
        torch.manual_seed(0)
        return build_model(base.model, pre.num_numeric_outputs, pre.cardinalities)

    t0 = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    ray_init_s = time.perf_counter() - t0
    trivial_s = min(trivial_fit(str(root / "ray"), base), trivial_fit(str(root / "ray"), base))
    trivial_local_s = min(trivial_fit(str(root / "ray"), base, 0), trivial_fit(str(root / "ray"), base, 0))

    use_mlflow = not args.no_mlflow and importlib.util.find_spec("mlflow") is not None
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}",
              flush=True)
    rows = []
    for bs in batch_sizes:
        a = bench_ray_data(train_df, pre, model_fn, bs, device, args.max_s)
        b = bench_resident(train_df, pre, model_fn, bs, device, args.max_s)
        for data_path in args.data_paths.split(","):
            s = _settings(root, scaling={"use_gpu": use_gpu, "cpus_per_worker": args.threads,
                                         "num_workers": int(args.num_workers)},
                          training={"batch_size": bs, "epochs": args.epochs, "early_stopping_patience": 99,
                                    "data_path": data_path})
            c, wall, epochs_s, used = bench_modelsvc(s, use_mlflow)
            rows.append((bs, used, a, b, c, wall, epochs_s))
            print(f"batch {bs} {used}: (a) {a:,.0f}/s (b) {b:,.0f}/s (c) {c:,.0f}/s", flush=True)

    print(f"\ndataset on {DATASETS.get('datasets', 'local disk')}")
    print(f"device={args.device} rows={args.rows} (train {len(train_df)}) torch threads={args.threads} "
          f"model={base.model.hidden_layers} emb={base.model.embedding_dim} "
          f"(c) {'train() with MLflow' if use_mlflow else 'fit_workers (no MLflow)'}")
    print(f"{'batch':>6} {'(c) path':>9} {'(a) ray data/s':>15} {'(b) resident/s':>15} {'(c) modelsvc/s':>15} "
          f"{'b/a':>7} {'c/a':>7} {'c/b':>6} {'train wall s':>12} {'epochs s':>9} {'overhead s':>10}")
    fixed_s = trivial_local_s if int(args.num_workers) == 0 else trivial_s
    for bs, used, a, b, c, wall, ep in rows:
        print(f"{bs:>6} {used:>9} {a:>15,.0f} {b:>15,.0f} {c:>15,.0f} {b / a:>7.1f} {c / a:>7.1f} {c / b:>6.2f} "
              f"{wall:>12.1f} {ep:>9.1f} {wall - ep - fixed_s:>10.1f}")
    print(f"ray.init: {ray_init_s:.1f}s; trivial TorchTrainer.fit: {trivial_s:.1f}s (1 worker), "
          f"{trivial_local_s:.2f}s (local mode); "
          "overhead = train wall - epoch time - trivial fit (preprocessing fit, data load, MLflow, model logging)")

    if args.ttq_rows:
        ttq_root = root / "ttq"
        s = _settings(ttq_root, scaling={"use_gpu": use_gpu, "cpus_per_worker": args.threads})
        _, tdf = write_synthetic_dataset(s, rows=args.ttq_rows, seed=5)
        val = tdf[tdf["split"] == "validation"]
        oracle = roc_auc(val["is_clicked"], val["p_true"])
        r = train(s)
        elapsed, reached = 0.0, None
        for h in r.history:
            elapsed += h.epoch_time_s
            if reached is None and h.val_auc >= oracle - 0.01:
                reached = (h.epoch, elapsed)
        print(f"\ntime to quality: rows={args.ttq_rows} batch={s.training.batch_size} lr={s.training.lr} "
              f"oracle val AUC {oracle:.4f}; best val AUC {r.metrics['val_auc']:.4f} (epoch {r.best_epoch}); "
              + (f"within 0.01 after epoch {reached[0]} = {reached[1]:.1f}s of training" if reached
                 else "never within 0.01")
              + f"; train() wall {r.wall_s:.1f}s for {r.epochs_run} epochs")


if __name__ == "__main__":
    main()
