"""The Ray Train worker function and its typed configuration.

``train_loop_per_worker`` runs on every Ray Train worker: :func:`restore` the latest checkpoint, build the model
and optimizer, read this rank's :func:`batches`, then per epoch :func:`run_epoch` and :func:`checkpoint`. The data
path itself (resident or streaming shards, the epoch and evaluation steps) is in ``modelsvc.training.loop``.

Imported by Ray workers only (lazily from ``modelsvc.training.trainer``): torch is a module-level import here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from modelsvc.config import ModelSettings
from modelsvc.training.loop import (
    STATE_FILE,
    ResidentBatches,
    StreamingBatches,
    choose_data_path,
    cpu_state,
    evaluate,
    load_state,
    read_split,
    row_bytes,
    shard_bounds,
    sync,
    to_tensors,
    train_one_epoch,
    unwrap,
    worker_batch_size,
)
from modelsvc.training.model import build_model
from modelsvc.training.preprocessing import Preprocessor

WORKERS_TAG = "modelsvc.train.workers"  # run tag: JSON list of {rank, node_id, host, pid}


class WorkerConfig(BaseModel):
    """Everything a worker needs, built by ``modelsvc.training.trainer.fit_workers`` (sent to every worker)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    data_file: str
    label: str
    preprocessor: dict[str, Any] = Field(description="Preprocessor.to_dict() of the fitted preprocessor")
    model: ModelSettings
    train_rows: int
    lr: float
    weight_decay: float
    batch_size: int = Field(description="global batch; each of N workers draws batch_size / N rows a step")
    epochs: int
    seed: int
    patience: int
    data_path_mode: Literal["auto", "resident", "streaming"]
    resident_max_bytes: int | None = None
    mlflow_tracking_uri: str | None = None
    mlflow_run_id: str | None = Field(None, description="None: rank 0 logs nothing to MLflow")
    fail_at_epoch: int | None = Field(None, description="test hook: rank 0 fails once at this epoch")
    progress_sink: Any = Field(None, description="the driver's progress actor (a Ray actor handle) or None")


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights, and what the epochs update."""

    epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    stopped: bool = False
    best_state: dict[str, torch.Tensor] | None = None


# -- the Ray Train worker function -----------------------------------------------------------------------------
def train_loop_per_worker(raw: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; ``raw`` is a :class:`WorkerConfig` as a dict (Ray's train_loop_config)."""
    import ray.train
    import ray.train.torch

    config = WorkerConfig.model_validate(raw)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    pre = Preprocessor.from_dict(config.preprocessor)

    saved = restore()
    torch.manual_seed(config.seed)
    net = build_model(config.model, pre.num_numeric_outputs, pre.cardinalities)
    if saved is not None:
        net.load_state_dict(saved["model"])
    model = ray.train.torch.prepare_model(net)
    # fused Adam on a GPU: one kernel per step instead of a dozen (a small MLP's step is launch-bound there)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                 fused=True if device.type == "cuda" else None)
    state = TrainState()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(epoch=int(saved["epoch"]), history=list(saved["history"]),
                           best_val_loss=saved["best_val_loss"], bad_epochs=saved["bad_epochs"],
                           stopped=saved["stopped"], best_state=saved["best_state"])
    start_epoch = state.epoch + 1
    if state.stopped or start_epoch >= config.epochs:
        return  # already finished: the latest checkpoint holds the result

    train_batches, mode = batches(config, pre, rank, world, device)
    val = validation(config, pre, device) if rank == 0 else None
    tracker = _RankZeroTracker(config, rank, _gather_workers(rank, world))

    for epoch in range(start_epoch, config.epochs):
        # test hook: fail once at epoch k; the restarted attempt resumes at k (start_epoch == k) and goes on
        if config.fail_at_epoch is not None and start_epoch < config.fail_at_epoch == epoch and rank == 0:
            raise RuntimeError(f"modelsvc test hook: injected worker failure at epoch {epoch}")
        metrics = run_epoch(model, optimizer, train_batches, val, state, epoch, config, rank, world, device)
        if rank == 0:
            tracker.epoch(metrics, {"epochs": config.epochs, "data_path": mode, "device": str(device)})
        checkpoint(model, optimizer, state, metrics, mode, device, rank)
        if state.stopped:
            break


def restore() -> dict[str, Any] | None:
    """State from the latest checkpoint: a rerun of the same training, or a restart after a worker failure."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return load_state(d)


def batches(config: WorkerConfig, pre: Preprocessor, rank: int, world: int,
            device: torch.device) -> tuple[ResidentBatches | StreamingBatches, str]:
    """This rank's shard of the train split, resident on the device when it fits, else streamed; and the mode."""
    start, stop = shard_bounds(config.train_rows, rank, world)
    mode = choose_data_path(config.data_path_mode, stop - start, row_bytes(pre), device, config.resident_max_bytes)
    batch_size = worker_batch_size(config.batch_size, world)
    if mode == "resident":
        df = read_split(config.data_file, "train", [*pre.input_columns, config.label], start, stop)
        return ResidentBatches(*to_tensors(pre, df, config.label), batch_size=batch_size, seed=config.seed,
                               rank=rank, device=device), mode
    return StreamingBatches(config.data_file, pre, config.label, start=start, stop=stop, batch_size=batch_size,
                            seed=config.seed, rank=rank, device=device), mode


def validation(config: WorkerConfig, pre: Preprocessor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The validation split as device tensors (rank 0 evaluates each epoch)."""
    vdf = read_split(config.data_file, "validation", [*pre.input_columns, config.label])
    return tuple(torch.from_numpy(a).to(device) for a in to_tensors(pre, vdf, config.label))


def run_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train_batches: Any,
              val: tuple[torch.Tensor, ...] | None, state: TrainState, epoch: int, config: WorkerConfig,
              rank: int, world: int, device: torch.device) -> dict[str, float]:
    """Train one epoch, let rank 0 evaluate and decide early stopping for everybody; updates ``state``."""
    torch.manual_seed(config.seed * 7919 + epoch * 31 + rank)  # dropout: reproducible after a resume
    sync(device)
    t0 = time.perf_counter()
    train_loss, samples = train_one_epoch(model, optimizer, train_batches, epoch)
    sync(device)
    elapsed = time.perf_counter() - t0

    stats = torch.zeros(3, dtype=torch.float64, device=device)
    if rank == 0 and val is not None:
        m = evaluate(unwrap(model), *val)
        improved = m["val_loss"] < state.best_val_loss - 1e-7
        state.best_val_loss = m["val_loss"] if improved else state.best_val_loss
        state.bad_epochs = 0 if improved else state.bad_epochs + 1
        if improved:
            state.best_state = cpu_state(model)
        stats[0], stats[1] = m["val_loss"], m["val_auc"]
        stats[2] = float(state.bad_epochs >= config.patience)
    if world > 1:  # rank 0 decides early stopping for everybody
        import torch.distributed as dist

        dist.broadcast(stats, src=0)
    state.stopped = bool(stats[2].item())
    state.epoch = epoch
    metrics = {
        "epoch": epoch,
        "train_loss": train_loss,
        "val_loss": float(stats[0].item()),
        "val_auc": float(stats[1].item()),
        "samples_per_s": samples * world / max(elapsed, 1e-9),
        "epoch_time_s": elapsed,
    }
    state.history.append(metrics)
    return metrics


def checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
               metrics: dict[str, float], mode: str, device: torch.device, rank: int) -> None:
    """Report the epoch to Ray Train; rank 0 attaches the checkpoint (weights, optimizer, history, best model)."""
    import ray.train

    report = {**metrics, "best_val_loss": state.best_val_loss, "stopped": state.stopped, "data_path": mode,
              "device": device.type}
    if rank != 0:
        ray.train.report(report)
        return
    tmp = tempfile.mkdtemp(prefix="modelsvc-ckpt-")
    torch.save({
        "model": cpu_state(model), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
        "history": state.history, "best_val_loss": state.best_val_loss, "bad_epochs": state.bad_epochs,
        "stopped": state.stopped, "best_state": state.best_state if state.best_state is not None else cpu_state(model),
        "data_path": mode,
    }, Path(tmp) / STATE_FILE)
    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    shutil.rmtree(tmp, ignore_errors=True)


# -- rank 0's side channels: MLflow and the driver's progress actor ---------------------------------------------
class _RankZeroTracker:
    """Rank 0's MLflow logging (best effort: a worker on another node may lack the server's credentials or route;
    the driver then logs what is missing after the fit, trainer's ``log_epochs``) and its progress messages."""

    def __init__(self, config: WorkerConfig, rank: int, workers: list[dict[str, Any]]) -> None:
        self.run_id = config.mlflow_run_id
        self.sink = config.progress_sink
        self.client: Any = None
        if rank == 0 and self.run_id:
            from mlflow.tracking import MlflowClient

            self.client = MlflowClient(tracking_uri=config.mlflow_tracking_uri)
            try:  # where each rank ran: proof that a cluster run really used its nodes
                self.client.set_tag(self.run_id, WORKERS_TAG, json.dumps(workers))
            except Exception:  # noqa: BLE001 - any tracking failure: stop logging from here, keep training
                self.client = None

    def epoch(self, metrics: dict[str, float], extra: dict[str, Any]) -> None:
        logged = False
        if self.client is not None:
            try:
                from mlflow.entities import Metric

                ts = int(time.time() * 1000)
                self.client.log_batch(self.run_id, metrics=[
                    Metric(k, float(v), ts, int(metrics["epoch"])) for k, v in metrics.items() if k != "epoch"])
                logged = True
            except Exception:  # noqa: BLE001 - see the class doc: the driver logs the epoch instead
                self.client = None
        send_progress(self.sink, {**metrics, **extra, "mlflow_logged": logged})


def send_progress(sink: Any, data: dict[str, Any]) -> None:
    """Hand rank 0's epoch to the driver's progress actor (fire and forget; a lost message only costs a tick)."""
    if sink is None:
        return
    with contextlib.suppress(Exception):
        sink.put.remote(data)


def _gather_workers(rank: int, world: int) -> list[dict[str, Any]]:
    """Every rank's Ray node id, host and pid, in rank order (collective: every rank calls it)."""
    import socket

    import ray

    me = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname(),
          "pid": os.getpid()}
    if world == 1:
        return [me]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, me)
    return out
