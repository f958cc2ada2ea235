"""The Ray Train worker function and its typed configuration.

``train_loop_per_worker`` runs on every Ray Train worker, or in the driver in Ray Train's local mode
(``num_workers=0``): :func:`restore` the latest checkpoint, build the model and optimizer, read this rank's
:func:`batches`, then per epoch :func:`run_epoch` and :func:`checkpoint`. The data path itself (resident or
streaming shards, the epoch and evaluation steps) is in ``modelsvc.training.loop``.

Workers do not import MLflow (1.5 s before the first epoch): rank 0 hands each epoch to the driver's progress sink
and the driver logs it; where each rank ran is in the checkpoint state, tagged on the run by the driver.

Imported by Ray workers only (lazily from ``modelsvc.training.trainer``): torch is a module-level import here.
"""

from __future__ import annotations

import contextlib
import io
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
from modelsvc.dataset import DatasetManifest
from modelsvc.training.loop import (
    STATE_FILE,
    ResidentBatches,
    StreamingBatches,
    adam,
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


class WorkerConfig(BaseModel):
    """Everything a worker needs, built by ``modelsvc.training.trainer.fit_workers`` (sent to every worker)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())

    dataset: DatasetManifest = Field(description="the dataset version's manifest, by value: each worker reads its "
                                     "own files and row groups straight from the location it names")
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
    min_delta: float = Field(0.0, description="a smaller drop of the validation loss is no improvement for early "
                             "stopping")
    data_path_mode: Literal["auto", "resident", "streaming"]
    resident_max_bytes: int | None = None
    use_gpu: bool | None = Field(None, description="local mode: False keeps a CUDA machine's training on the CPU")
    checkpoint_uri: str | None = Field(None, description="local mode: the state file rank 0 persists each epoch "
                                       "and restores from (Ray's local mode keeps checkpoints in memory only)")
    fail_at_epoch: int | None = Field(None, description="test hook: rank 0 fails once at this epoch")
    fail_after_log_epoch: int | None = Field(None, description="test hook: rank 0 fails once after handing "
                                             "this epoch to the driver, before its checkpoint")
    progress_sink: Any = Field(None, description="the driver's ProgressSink (a Ray actor handle, or the object "
                                                 "itself in local mode) or None")


@dataclass
class TrainState:
    """What a checkpoint holds besides the weights, and what the epochs update."""

    epoch: int = -1
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_loss: float = math.inf
    bad_epochs: int = 0
    stop_ref_loss: float = math.inf  # validation loss of the last meaningful improvement (early stopping)
    stopped: bool = False
    best_state: dict[str, torch.Tensor] | None = None
    workers: list[dict[str, Any]] = field(default_factory=list)


# -- the Ray Train worker function -----------------------------------------------------------------------------
def train_loop_per_worker(raw: dict[str, Any]) -> None:
    """Runs on every Ray Train worker; ``raw`` is a :class:`WorkerConfig` as a dict (Ray's train_loop_config)."""
    import ray.train
    import ray.train.torch

    config = WorkerConfig.model_validate(raw)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if config.use_gpu is False:  # local mode picks CUDA whenever torch sees it
        device = torch.device("cpu")
    pre = Preprocessor.from_dict(config.preprocessor)

    saved = restore(config)
    torch.manual_seed(config.seed)
    net = build_model(config.model, pre.num_numeric_outputs, pre.cardinalities)
    if saved is not None:
        net.load_state_dict(saved["model"])
    model = ray.train.torch.prepare_model(net, move_to_device=device)
    # fused Adam on a GPU: one kernel per step instead of a dozen (a small MLP's step is launch-bound there)
    optimizer = adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                     fused=True if device.type == "cuda" else None)
    state = TrainState()
    if saved is not None:
        optimizer.load_state_dict(saved["optimizer"])
        state = TrainState(epoch=int(saved["epoch"]), history=list(saved["history"]),
                           best_val_loss=saved["best_val_loss"], bad_epochs=saved["bad_epochs"],
                           stopped=saved["stopped"], best_state=saved["best_state"],
                           workers=list(saved.get("workers", [])),
                           stop_ref_loss=saved.get("stop_ref_loss", saved["best_val_loss"]))
    start_epoch = state.epoch + 1
    if state.stopped or start_epoch >= config.epochs:
        return  # already finished: the latest checkpoint holds the result

    train_batches, mode = batches(config, pre, rank, world, device)
    val = validation(config, pre, device) if rank == 0 else None
    state.workers = _gather_workers(rank, world)

    for epoch in range(start_epoch, config.epochs):
        # test hook: fail once at epoch k; the restarted attempt resumes at k (start_epoch == k) and goes on
        if config.fail_at_epoch is not None and start_epoch < config.fail_at_epoch == epoch and rank == 0:
            raise RuntimeError(f"modelsvc test hook: injected worker failure at epoch {epoch}")
        metrics = run_epoch(model, optimizer, train_batches, val, state, epoch, config, rank, world, device)
        if rank == 0:
            send_progress(config.progress_sink, {**metrics, "epochs": config.epochs, "data_path": mode,
                                                 "device": str(device)})
            # [ops] test hook: die once after handing epoch k to the driver, before its checkpoint
            fail_after = config.fail_after_log_epoch
            if fail_after is not None and start_epoch < fail_after == epoch:
                raise RuntimeError(f"modelsvc test hook: injected failure after logging epoch {epoch}")
        checkpoint(model, optimizer, state, metrics, mode, device, rank, config.checkpoint_uri)
        if state.stopped:
            break


def restore(config: WorkerConfig) -> dict[str, Any] | None:
    """State from the latest checkpoint: a rerun of the same training, or a restart after a worker failure.
    In local mode Ray has none to give: the state file persisted by :func:`checkpoint`, if any."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            return load_state(d)
    return read_state_file(config.checkpoint_uri) if config.checkpoint_uri else None


def batches(config: WorkerConfig, pre: Preprocessor, rank: int, world: int,
            device: torch.device) -> tuple[ResidentBatches | StreamingBatches, str]:
    """This rank's shard of the train split, resident on the device when it fits, else streamed; and the mode."""
    start, stop = shard_bounds(config.train_rows, rank, world)
    mode = choose_data_path(config.data_path_mode, stop - start, row_bytes(pre), device, config.resident_max_bytes)
    batch_size = worker_batch_size(config.batch_size, world)
    if mode == "resident":
        df = read_split(config.dataset, "train", [*pre.input_columns, config.label], start, stop)
        return ResidentBatches(*to_tensors(pre, df, config.label), batch_size=batch_size, seed=config.seed,
                               rank=rank, device=device), mode
    return StreamingBatches(config.dataset, pre, config.label, start=start, stop=stop, batch_size=batch_size,
                            seed=config.seed, rank=rank, device=device), mode


def validation(config: WorkerConfig, pre: Preprocessor, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The validation split as device tensors (rank 0 evaluates each epoch)."""
    vdf = read_split(config.dataset, "validation", [*pre.input_columns, config.label])
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
        if observe(state, m["val_loss"], config.min_delta):
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


def observe(state: TrainState, val_loss: float, min_delta: float) -> bool:
    """Update ``state`` with an epoch's validation loss; True when it is the best so far (the model to keep).

    Early stopping counts the epochs since the last *meaningful* improvement: a loss more than ``min_delta`` below
    the loss of the previous meaningful one (Keras' and Lightning's rule). On the demo the loss still creeps down by
    0.0002-0.0005 an epoch long after the validation AUC has settled (docs/performance.md, "Time to quality")."""
    best = val_loss < state.best_val_loss - 1e-7
    if best:
        state.best_val_loss = val_loss
    if val_loss < state.stop_ref_loss - max(min_delta, 1e-7):
        state.stop_ref_loss = val_loss
        state.bad_epochs = 0
    else:
        state.bad_epochs += 1
    return best


def checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainState,
               metrics: dict[str, float], mode: str, device: torch.device, rank: int,
               persist_uri: str | None = None) -> None:
    """Report the epoch to Ray Train; rank 0 attaches the checkpoint (weights, optimizer, history, best model)
    and, in local mode, first persists it to ``persist_uri``."""
    import ray.train

    report = {**metrics, "best_val_loss": state.best_val_loss, "stopped": state.stopped, "data_path": mode,
              "device": device.type}
    if rank != 0:
        ray.train.report(report)
        return
    data = {
        "model": cpu_state(model), "optimizer": optimizer.state_dict(), "epoch": state.epoch,
        "history": state.history, "best_val_loss": state.best_val_loss, "bad_epochs": state.bad_epochs,
        "stop_ref_loss": state.stop_ref_loss,
        "stopped": state.stopped, "best_state": state.best_state if state.best_state is not None else cpu_state(model),
        "data_path": mode, "workers": state.workers,
    }
    if persist_uri:
        write_state_file(persist_uri, data)
    tmp = tempfile.mkdtemp(prefix="modelsvc-ckpt-")
    torch.save(data, Path(tmp) / STATE_FILE)
    ray.train.report(report, checkpoint=ray.train.Checkpoint.from_directory(tmp))
    shutil.rmtree(tmp, ignore_errors=True)


def _fs(uri: str) -> tuple[Any, str]:
    from modelsvc import storage

    return storage.filesystem(uri)  # type: ignore[no-any-return]


def write_state_file(uri: str, data: dict[str, Any]) -> None:
    """``data`` as ``<uri>/state.pt`` (local path or any pyarrow filesystem URI), replaced whole: written beside
    it, then moved over it, so a crash leaves the previous epoch's state."""
    fs, root = _fs(uri)
    fs.create_dir(root, recursive=True)
    buf = io.BytesIO()
    torch.save(data, buf)
    tmp = f"{root}/.{STATE_FILE}.{os.getpid()}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(buf.getvalue())
    fs.move(tmp, f"{root}/{STATE_FILE}")


def read_state_file(uri: str) -> dict[str, Any] | None:
    """The state written by :func:`write_state_file`, None when there is none. A store that cannot be read
    (unreachable, credentials refused) is an error, never "no state": that would restart the training from
    epoch 0 and then overwrite the state it could not read."""
    from modelsvc import storage

    location = storage.join(uri, STATE_FILE)
    if not storage.is_file(location):
        return None
    return torch.load(io.BytesIO(storage.read_bytes(location)), map_location="cpu", weights_only=True)


# -- rank 0's progress and where the ranks ran ------------------------------------------------------------------
def send_progress(sink: Any, data: dict[str, Any]) -> None:
    """Hand rank 0's epoch to the driver's progress sink (fire and forget; a lost message only costs a tick and
    the driver logs any epoch still missing after the fit)."""
    if sink is None:
        return
    with contextlib.suppress(Exception):
        put = sink.put
        getattr(put, "remote", put)(data)  # an actor's method, or the local-mode object's


def _gather_workers(rank: int, world: int) -> list[dict[str, Any]]:
    """Every rank's Ray node id, host and pid, in rank order (collective: every rank calls it)."""
    import socket

    import ray

    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None  # None: local mode
    me = {"rank": rank, "node_id": node, "host": socket.gethostname(), "pid": os.getpid()}
    if world == 1:
        return [me]
    import torch.distributed as dist

    out: list[Any] = [None] * world
    dist.all_gather_object(out, me)
    return out
