"""The training loop's fast data path, its epoch and evaluation steps, and the checkpoint state file.

Each worker reads its shard of the train split (rows split by rank) once, preprocesses it into tensors and, when
it fits the memory budget, keeps it resident on the device and draws shuffled batches by index (seeded
``torch.randperm`` on the device). Otherwise it streams large pinned batches with a prefetch thread. Ray Data's
per-batch iterator is deliberately not used: for a small MLP its per-batch overhead dominates.

Imported by the Ray Train worker (``modelsvc.training.worker``), the trainer and the benchmark, always lazily:
torch and pyarrow are module-level imports here on purpose.
"""

from __future__ import annotations

import contextlib
import math
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from modelsvc.dataset import DataFile, DatasetManifest, iter_rows, read_rows
from modelsvc.dataset import split_row_groups as split_row_groups  # re-exported: format 1 files
from modelsvc.metrics import rank_auc
from modelsvc.training.preprocessing import Preprocessor

STATE_FILE = "state.pt"
EVAL_BATCH = 65536
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# -- the optimizer ---------------------------------------------------------------------------------------------
def adam(params: Any, *, lr: float, weight_decay: float, fused: bool | None = None) -> torch.optim.Optimizer:
    """``torch.optim.Adam``, the same updates bit for bit, without importing ``torch._dynamo``.

    Every method of torch's optimizers imports ``torch._dynamo`` on its first call (to opt out of compilation):
    1.1-1.8 s on 2 cores, more than a fifth of the demo's epochs, for a training that compiles nothing. Where
    ``torch._dynamo`` is not imported yet this returns :class:`_EagerAdam`, which calls the same methods
    undecorated; otherwise (or where the decorated methods are not found) torch's own ``Adam``.
    """
    import sys

    if "torch._dynamo" in sys.modules or not _EagerAdam.available():
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    return _EagerAdam(params, lr=lr, weight_decay=weight_decay, fused=fused)


class _EagerAdam(torch.optim.Adam):
    """torch's ``Adam`` with its methods called through ``__wrapped__``: without the decorators that import
    ``torch._dynamo`` (``_use_grad_for_differentiable`` on ``step``: grad mode off around the update, which
    this keeps; ``torch._disable_dynamo`` on the other four). Tested against ``torch.optim.Adam``."""

    _METHODS = (
        (torch.optim.Adam, "step"), (torch.optim.Optimizer, "add_param_group"), (torch.optim.Optimizer, "zero_grad"),
        (torch.optim.Optimizer, "state_dict"), (torch.optim.Optimizer, "load_state_dict"),
    )

    @classmethod
    def available(cls) -> bool:
        return all(callable(getattr(getattr(owner, name), "__wrapped__", None)) for owner, name in cls._METHODS)

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        with torch.set_grad_enabled(bool(self.defaults["differentiable"])):
            return torch.optim.Adam.step.__wrapped__(self, closure)  # type: ignore[attr-defined]

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        torch.optim.Optimizer.add_param_group.__wrapped__(self, param_group)  # type: ignore[attr-defined]

    def zero_grad(self, set_to_none: bool = True) -> None:
        torch.optim.Optimizer.zero_grad.__wrapped__(self, set_to_none)  # type: ignore[attr-defined]

    def state_dict(self) -> dict[str, Any]:
        return torch.optim.Optimizer.state_dict.__wrapped__(self)  # type: ignore[attr-defined,no-any-return]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        torch.optim.Optimizer.load_state_dict.__wrapped__(self, state_dict)  # type: ignore[attr-defined]


# -- reading ---------------------------------------------------------------------------------------------------
def worker_batch_size(global_batch: int, world: int) -> int:
    """Rows per step on each of ``world`` workers so that one step of all of them sees ``global_batch`` rows
    (DDP averages the workers' gradients): the learning rate and the steps per epoch stay those of one worker."""
    return max(1, math.ceil(global_batch / world))


def shard_bounds(n_total: int, rank: int, world: int) -> tuple[int, int]:
    """Contiguous rows of one rank; every rank gets the same count (up to world-1 rows are dropped)."""
    per_rank = n_total // world
    return rank * per_rank, (rank + 1) * per_rank


def as_dataset(source: str | Path | DatasetManifest) -> DatasetManifest:
    """A version's manifest as it is, or one Parquet file with a ``split`` column (a local path or a URI) seen as a
    version of that one file."""
    if isinstance(source, DatasetManifest):
        return source
    text = str(source)
    folder, _, name = text.rstrip("/").rpartition("/")
    fields: dict[str, Any] = {"path": folder or ".", "format": 1, "rows": 0,
                              "files": [DataFile(path=name, split=None, rows=0)]}
    return DatasetManifest.model_construct(**fields)  # only what the readers use


def read_split(source: str | Path | DatasetManifest, split: str, columns: list[str], start: int = 0,
               stop: int | None = None) -> pd.DataFrame:
    """Rows ``[start, stop)`` of ``split`` in file order (all of them by default), reading only the files and row
    groups that hold them, straight from the dataset's location."""
    return read_rows(as_dataset(source), split, columns, start, stop).to_pandas()


def to_tensors(pre: Preprocessor, df: pd.DataFrame, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    num, cat = pre.transform(df)
    y = pd.to_numeric(df[label], errors="coerce").fillna(0).to_numpy(dtype=np.float32)
    return num, cat, y


def row_bytes(pre: Preprocessor) -> int:
    """Device bytes of one preprocessed row (numeric float32, categorical int64, label float32)."""
    return 4 * pre.num_numeric_outputs + 8 * len(pre.categorical) + 4


def memory_budget(device: torch.device, override: int | None) -> int:
    """Bytes a resident shard may take: the override, else half the free device (or host) memory."""
    if override:
        return override
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    import psutil

    return int(psutil.virtual_memory().available * 0.5)


def choose_data_path(mode: str, n_rows: int, bytes_per_row: int, device: torch.device,
                     override: int | None) -> str:
    if mode != "auto":
        return mode
    return "resident" if n_rows * bytes_per_row <= memory_budget(device, override) else "streaming"


# -- batches ---------------------------------------------------------------------------------------------------
def _generator(device: torch.device, *seed_parts: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    seed = 0
    for part in seed_parts:
        seed = (seed * 1_000_003 + int(part)) % (2**63 - 1)
    gen.manual_seed(seed)
    return gen


class ResidentBatches:
    """A shard held in device memory; each epoch a seeded permutation on the device picks the batches."""

    def __init__(self, num: np.ndarray, cat: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int,
                 rank: int, device: torch.device) -> None:
        self.device = device
        self.num = torch.from_numpy(num).to(device)
        self.cat = torch.from_numpy(cat).to(device)
        self.y = torch.from_numpy(y).to(device)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank

    @property
    def rows(self) -> int:
        return int(self.y.shape[0])

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        perm = torch.randperm(self.rows, device=self.device, generator=_generator(self.device, self.seed,
                                                                                   epoch, self.rank))
        for i in range(0, self.rows, self.batch_size):
            idx = perm[i:i + self.batch_size]
            yield self.num[idx], self.cat[idx], self.y[idx]


class StreamingBatches:
    """A shard too large for the device: read row-group chunks, preprocess, shuffle within the chunk, pin and
    copy large batches to the device on a side stream while the previous batch trains (prefetch thread)."""

    def __init__(self, source: str | Path | DatasetManifest, pre: Preprocessor, label: str, *, start: int,
                 stop: int, batch_size: int, seed: int, rank: int, device: torch.device,
                 chunk_rows: int | None = None, prefetch: int = 4) -> None:
        self.dataset = as_dataset(source)
        self.pre = pre
        self.label = label
        self.start, self.stop = start, stop
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.device = device
        self.chunk_rows = chunk_rows or max(batch_size * 32, 262_144)
        self.prefetch = prefetch

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def __len__(self) -> int:
        return math.ceil(self.rows / self.batch_size)

    def _chunks(self) -> Iterator[pd.DataFrame]:
        """The shard's train rows in file order, a chunk at a time (only its files and row groups are read)."""
        columns = [*self.pre.input_columns, self.label]
        for table in iter_rows(self.dataset, "train", columns, self.start, self.stop, batch_rows=self.chunk_rows):
            yield table.to_pandas()

    def _to_device(self, arrays: tuple[np.ndarray, ...], stream: Any) -> tuple[Batch, Any]:
        tensors = [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]
        if self.device.type != "cuda":
            return (tensors[0], tensors[1], tensors[2]), None
        with torch.cuda.stream(stream):
            moved = [t.pin_memory().to(self.device, non_blocking=True) for t in tensors]
            event = torch.cuda.Event()
            event.record(stream)
        return (moved[0], moved[1], moved[2]), event

    def epoch(self, epoch: int) -> Iterator[Batch]:  # noqa: C901 - producer thread + consumer, kept together
        q: queue.Queue[Any] = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce() -> None:
            try:
                rng = np.random.default_rng([self.seed, epoch, self.rank])
                stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
                carry: tuple[np.ndarray, ...] | None = None
                for df in self._chunks():
                    arrays: tuple[np.ndarray, ...] = to_tensors(self.pre, df, self.label)
                    perm = rng.permutation(len(df))
                    arrays = tuple(a[perm] for a in arrays)
                    if carry is not None:
                        arrays = tuple(np.concatenate([c, a]) for c, a in zip(carry, arrays, strict=True))
                    n_full = (len(arrays[2]) // self.batch_size) * self.batch_size
                    for i in range(0, n_full, self.batch_size):
                        if stop.is_set():
                            return
                        q.put(self._to_device(tuple(a[i:i + self.batch_size] for a in arrays), stream))
                    carry = tuple(a[n_full:] for a in arrays)
                if carry is not None and len(carry[2]):
                    q.put(self._to_device(carry, stream))
                q.put(done)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                q.put(exc)

        thread = threading.Thread(target=produce, name="modelsvc-prefetch", daemon=True)
        thread.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    return
                if isinstance(item, BaseException):
                    raise item
                batch, event = item
                if event is not None:
                    current = torch.cuda.current_stream(self.device)
                    current.wait_event(event)
                    for t in batch:  # allocated on the side stream, used on this one: not reused before it is done
                        t.record_stream(current)
                yield batch
        finally:
            stop.set()
            while thread.is_alive():  # drain so a blocked producer can finish
                with contextlib.suppress(queue.Empty):
                    q.get(timeout=0.1)
            thread.join()


# -- training and evaluation -----------------------------------------------------------------------------------
def train_one_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, batches: Any, epoch: int) -> tuple[float,
                                                                                                           int]:
    """One pass over ``batches``; returns (mean train loss, samples)."""
    model.train()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    total = torch.zeros((), dtype=torch.float64, device=_device_of(model))
    samples = 0
    for num, cat, y in batches.epoch(epoch):
        optimizer.zero_grad(set_to_none=True)
        loss_sum = loss_fn(model(num, cat), y)
        (loss_sum / y.shape[0]).backward()
        optimizer.step()
        total += loss_sum.detach()
        samples += int(y.shape[0])
    return float(total.item()) / max(samples, 1), samples


@torch.no_grad()
def predict_logits(model: nn.Module, num: torch.Tensor, cat: torch.Tensor) -> torch.Tensor:
    model.eval()
    out = [model(num[i:i + EVAL_BATCH], cat[i:i + EVAL_BATCH]) for i in range(0, num.shape[0], EVAL_BATCH)]
    return torch.cat(out) if out else torch.zeros(0, device=num.device)


def evaluate(model: nn.Module, num: torch.Tensor, cat: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    logits = predict_logits(model, num, cat)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, y).item()
    auc = rank_auc(y.cpu().numpy(), logits.float().cpu().numpy())  # not sklearn's: see modelsvc.metrics
    return {"val_loss": float(loss), "val_auc": auc}


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- checkpoint state ------------------------------------------------------------------------------------------
def unwrap(model: nn.Module) -> nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    return inner if isinstance(inner, nn.Module) else model


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def load_state(checkpoint_dir: str | Path) -> dict[str, Any]:
    return torch.load(Path(checkpoint_dir) / STATE_FILE, map_location="cpu", weights_only=True)
