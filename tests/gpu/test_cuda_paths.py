"""The CUDA data paths: device-resident shards and pinned streaming on a side stream. Skipped without a GPU.

CI has no GPU: these run on a GPU machine through ``benchmarks/gpu_check.sh`` (see docs/performance.md, "GPU").
Every check compares the CUDA result with the same computation on the CPU, which the unit tests cover.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from modelsvc.training.loop import (
    ResidentBatches,
    StreamingBatches,
    choose_data_path,
    evaluate,
    row_bytes,
    shard_bounds,
    to_tensors,
    train_one_epoch,
)
from modelsvc.training.model import CTRModel
from modelsvc.training.preprocessing import Preprocessor
from tests.datasets import synthetic_frame

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

CPU = torch.device("cpu")
CUDA = torch.device("cuda:0")


@pytest.fixture(scope="module")
def frame():
    df = synthetic_frame(20_000, seed=3)
    pre = Preprocessor.fit(df[df["split"] == "train"], NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    return df, pre


def _rows(batches) -> np.ndarray:
    return torch.cat([n.cpu() for n, _, _ in batches]).numpy()


def test_resident_shard_lives_on_the_device_and_covers_every_row_once(frame):
    df, pre = frame
    num, cat, y = to_tensors(pre, df[df["split"] == "train"], "is_clicked")
    b = ResidentBatches(num, cat, y, batch_size=1024, seed=1, rank=0, device=CUDA)
    got = list(b.epoch(0))
    assert all(t.device.type == "cuda" for batch in got for t in batch)
    assert len(got) == len(b)
    np.testing.assert_array_equal(np.sort(_rows(got), axis=0), np.sort(num, axis=0))
    np.testing.assert_array_equal(_rows(b.epoch(0)), _rows(got))  # seeded: same order again
    assert not np.array_equal(_rows(b.epoch(1))[:1024], _rows(got)[:1024])  # reshuffled per epoch


def test_streaming_on_cuda_yields_exactly_the_cpu_batches(tmp_path, frame):
    """Pinned copies on a side stream, consumed on the default stream: same batches, same order as on the CPU
    (the order comes from numpy's seeded generator), even while the default stream is kept busy."""
    df, pre = frame
    path = tmp_path / "data.parquet"
    df.drop(columns=["p_true"]).to_parquet(path, index=False, row_group_size=3000)
    n_train = int((df["split"] == "train").sum())
    start, stop = shard_bounds(n_train, 0, 1)
    kw = {"start": start, "stop": stop, "batch_size": 512, "seed": 4, "rank": 0, "chunk_rows": 2000}
    on_cpu = list(StreamingBatches(path, pre, "is_clicked", device=CPU, **kw).epoch(2))
    busy = torch.randn(2048, 2048, device=CUDA)
    on_cuda = []
    for num, cat, y in StreamingBatches(path, pre, "is_clicked", device=CUDA, prefetch=2, **kw).epoch(2):
        assert num.device.type == "cuda"
        assert num.is_contiguous()
        busy = busy @ busy / 2048  # work on the consuming stream while the producer copies
        on_cuda.append((num.clone(), cat.clone(), y.clone()))
        del num, cat, y  # freed while the stream may still be busy: record_stream must keep the memory
    torch.cuda.synchronize()
    assert len(on_cuda) == len(on_cpu)
    for (n1, c1, y1), (n2, c2, y2) in zip(on_cpu, on_cuda, strict=True):
        torch.testing.assert_close(n2.cpu(), n1, rtol=0, atol=0)
        torch.testing.assert_close(c2.cpu(), c1, rtol=0, atol=0)
        torch.testing.assert_close(y2.cpu(), y1, rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_training_on_cuda_learns_like_on_the_cpu(tmp_path, frame, mode):
    df, pre = frame
    train = df[df["split"] == "train"]
    val = to_tensors(pre, df[df["split"] == "validation"], "is_clicked")
    path = tmp_path / "data.parquet"
    df.drop(columns=["p_true"]).to_parquet(path, index=False, row_group_size=5000)
    results = {}
    for device in (CPU, CUDA):
        torch.manual_seed(0)
        model = CTRModel(pre.num_numeric_outputs, pre.cardinalities, embedding_dim=8, hidden_layers=[64, 32],
                         dropout=0.0).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        if mode == "resident":
            batches = ResidentBatches(*to_tensors(pre, train, "is_clicked"), batch_size=1024, seed=0, rank=0,
                                      device=device)
        else:
            batches = StreamingBatches(path, pre, "is_clicked", start=0, stop=len(train), batch_size=1024, seed=0,
                                       rank=0, device=device)
        losses = [train_one_epoch(model, opt, batches, e)[0] for e in range(4)]
        assert losses[-1] < losses[0]
        results[device.type] = evaluate(model, *(torch.from_numpy(a).to(device) for a in val))
    # different kernels and (resident) a different shuffle: close, not equal
    assert abs(results["cuda"]["val_auc"] - results["cpu"]["val_auc"]) < 0.02, results
    assert abs(results["cuda"]["val_loss"] - results["cpu"]["val_loss"]) < 0.02, results


def test_auto_reads_the_free_device_memory(frame):
    _, pre = frame
    free, _ = torch.cuda.mem_get_info(CUDA)
    assert choose_data_path("auto", 1_000_000, row_bytes(pre), CUDA, None) == "resident"
    assert choose_data_path("auto", int(free // row_bytes(pre)), row_bytes(pre), CUDA, None) == "streaming"
