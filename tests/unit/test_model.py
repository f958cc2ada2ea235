"""The MLP, the data path (resident and streaming batches), AUC and CPU determinism."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
from modelsvc.metrics import rank_auc as roc_auc
from modelsvc.training.loop import (
    ResidentBatches,
    StreamingBatches,
    choose_data_path,
    read_split,
    shard_bounds,
    split_row_groups,
    to_tensors,
    train_one_epoch,
    worker_batch_size,
)
from modelsvc.training.model import CTRModel, Dropout
from modelsvc.training.preprocessing import Preprocessor
from tests.datasets import synthetic_frame

CPU = torch.device("cpu")


def small_model(**kw) -> CTRModel:
    args = {"embedding_dim": 4, "hidden_layers": [16, 8], "dropout": 0.1} | kw
    return CTRModel(6, [4], **args)


def test_shapes_and_layers():
    model = small_model()
    out = model(torch.randn(32, 6), torch.randint(0, 4, (32, 1)))
    assert out.shape == (32,)
    assert model.embeddings[0].num_embeddings == 4
    assert model.embeddings[0].embedding_dim == 4
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6 + 4, 16), (16, 8), (8, 1)]
    assert not any(isinstance(m, (torch.nn.Dropout, Dropout)) for m in small_model(dropout=0.0).mlp)
    assert sum(isinstance(m, Dropout) for m in model.mlp) == 2


def test_dropout_drops_p_of_the_values_and_keeps_the_mean():
    torch.manual_seed(0)
    drop = Dropout(0.1).train()
    x = torch.ones(1_000, 1_001)  # an odd count: the last 64-bit word is only partly used
    y = drop(x)
    dropped = (y == 0).flatten().float()
    assert abs(dropped.mean().item() - 0.1) < 0.002
    for k in range(4):  # each of the four values drawn from one 64-bit word (the top one has a constant sign bit)
        assert abs(dropped[k::4].mean().item() - 0.1) < 0.003
    assert torch.unique(y).tolist() == [0.0, pytest.approx(1 / (1 - 3277 / 32768))]
    assert abs(y.mean().item() - 1.0) < 0.003
    # the gradient flows through the kept values only, with the same scale
    x = torch.randn(64, 32, requires_grad=True)
    out = drop(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / (1 - 3277 / 32768))
    # seeded like nn.Dropout; the identity in eval mode and at p=0
    torch.manual_seed(5)
    a = drop(torch.ones(100, 100))
    torch.manual_seed(5)
    assert torch.equal(a, drop(torch.ones(100, 100)))
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)


def test_from_config_round_trip():
    model = small_model()
    again = CTRModel.from_config(model.config)
    again.load_state_dict(model.state_dict())
    x, c = torch.randn(5, 6), torch.randint(0, 4, (5, 1))
    model.eval()
    again.eval()
    torch.testing.assert_close(model(x, c), again(x, c))


@pytest.fixture(scope="module")
def data():
    df = synthetic_frame(3000, seed=1)
    train = df[df["split"] == "train"]
    pre = Preprocessor.fit(train, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    return pre, train, to_tensors(pre, train, "is_clicked")


def _train(data, seed: int, epochs: int = 2) -> dict[str, torch.Tensor]:
    pre, _, arrays = data
    torch.manual_seed(seed)
    model = CTRModel(pre.num_numeric_outputs, pre.cardinalities, embedding_dim=4, hidden_layers=[16], dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batches = ResidentBatches(*arrays, batch_size=128, seed=seed, rank=0, device=CPU)
    losses = []
    for epoch in range(epochs):
        torch.manual_seed(seed * 7919 + epoch)
        loss, samples = train_one_epoch(model, opt, batches, epoch)
        assert samples == len(arrays[2])
        losses.append(loss)
    assert losses[-1] < losses[0]  # it learns
    return model.state_dict()


def test_training_is_deterministic_on_cpu(data):
    a, b, c = _train(data, 7), _train(data, 7), _train(data, 8)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_resident_batches_cover_every_row_once_in_a_seeded_order(data):
    _, _, (num, cat, y) = data
    b = ResidentBatches(num, cat, y, batch_size=500, seed=1, rank=0, device=CPU)
    got = [batch for batch in b.epoch(0)]
    assert len(got) == len(b) == -(-len(y) // 500)
    rows = torch.cat([n for n, _, _ in got])
    assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, torch.from_numpy(num).tolist()))
    first = next(n for n, _, _ in b.epoch(0))
    torch.testing.assert_close(first, got[0][0])  # same epoch, same order
    assert not torch.equal(next(n for n, _, _ in b.epoch(1)), got[0][0])  # reshuffled per epoch


def test_streaming_batches_cover_the_shard_like_resident(tmp_path, data):
    pre, _, _ = data
    df = synthetic_frame(3000, seed=1)
    path = tmp_path / "data.parquet"
    df.drop(columns=["p_true"]).to_parquet(path, index=False, row_group_size=700)
    n_train = int((df["split"] == "train").sum())
    for rank in (0, 1):
        start, stop = shard_bounds(n_train, rank, 2)
        s = StreamingBatches(path, pre, "is_clicked", start=start, stop=stop, batch_size=256, seed=1, rank=rank,
                             device=CPU, chunk_rows=300)
        got = list(s.epoch(0))
        assert len(got) == len(s)
        assert all(len(y) == 256 for _, _, y in got[:-1])
        expect = to_tensors(pre, df[df["split"] == "train"].iloc[start:stop], "is_clicked")[0]
        rows = torch.cat([n for n, _, _ in got]).numpy()
        np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(expect, axis=0))


def test_a_shard_read_touches_only_its_row_groups(tmp_path):
    df = synthetic_frame(3000, seed=1).drop(columns=["p_true"])
    rng = np.random.default_rng(0)  # splits interleaved in the middle of the file: row groups of mixed splits
    mixed = df.index[1000:2600]
    df.loc[mixed, "split"] = rng.choice(["train", "validation", "test"], size=len(mixed))
    path = tmp_path / "data.parquet"
    df.to_parquet(path, index=False, row_group_size=250)
    train = df[df["split"] == "train"].reset_index(drop=True)
    cols = ["total_orders_7d", "is_clicked"]
    for start, stop in [(0, 10), (0, len(train)), (137, 1001), (990, 1400), (len(train) - 5, len(train)),
                        (500, 500)]:
        got = read_split(path, "train", cols, start, stop)
        expect = train[cols].iloc[start:stop]
        assert len(got) == len(expect), (start, stop)
        np.testing.assert_array_equal(got["is_clicked"].to_numpy(), expect["is_clicked"].to_numpy())
        np.testing.assert_array_equal(got["total_orders_7d"].to_numpy(dtype=float),
                                      expect["total_orders_7d"].to_numpy(dtype=float))
    pf = pq.ParquetFile(path)
    assert split_row_groups(pf, "train", 0, 10) == ([0], 0)
    groups, before = split_row_groups(pf, "train", 1200, 1500)
    assert 0 < len(groups) < pf.num_row_groups
    assert before <= 1200
    assert split_row_groups(pf, "validation", 0, 1)[0] == [4]  # the first group holding a validation row


def test_streaming_errors_reach_the_training_loop(tmp_path, data):
    pre, _, _ = data
    path = tmp_path / "data.parquet"
    pd.DataFrame({"split": ["train"] * 10, "is_clicked": [0] * 10}).to_parquet(path)
    s = StreamingBatches(path, pre, "is_clicked", start=0, stop=10, batch_size=4, seed=0, rank=0, device=CPU)
    with pytest.raises(Exception, match="total_orders_7d"):
        list(s.epoch(0))


def test_batch_size_is_global_across_workers():
    assert [worker_batch_size(4096, w) for w in (1, 2, 3, 4)] == [4096, 2048, 1366, 1024]
    assert worker_batch_size(3, 8) == 1
    n_rows, world = 1_000_000, 4
    start, stop = shard_bounds(n_rows, 0, world)
    # each worker's steps per epoch = one worker's steps over all rows (up to rounding)
    assert -(-(stop - start) // worker_batch_size(4096, world)) == -(-n_rows // 4096)


def test_shards_are_equal_sized_and_disjoint():
    bounds = [shard_bounds(10, r, 3) for r in range(3)]
    assert bounds == [(0, 3), (3, 6), (6, 9)]


def test_auto_data_path_respects_the_memory_budget():
    assert choose_data_path("auto", 1000, 40, CPU, 1_000_000) == "resident"
    assert choose_data_path("auto", 1000, 40, CPU, 39_999) == "streaming"
    assert choose_data_path("resident", 10**12, 40, CPU, 1) == "resident"


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    s = np.round(rng.normal(size=400) + y, 1)  # rounded: many ties
    pos, neg = s[y == 1], s[y == 0]
    pairwise = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()) / (
        len(pos) * len(neg))
    assert roc_auc(y, s) == pytest.approx(pairwise, abs=1e-12)
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.3, 0.4]) == 0.0
    assert roc_auc([0, 1], [0.5, 0.5]) == 0.5
    assert np.isnan(roc_auc([1, 1], [0.1, 0.2]))


# validation losses of the default demo's 14 epochs before min_delta (docs/performance.md, "Time to quality")
DEMO_VAL_LOSSES = [0.36351, 0.35931, 0.3548, 0.35417, 0.35391, 0.35455, 0.35403, 0.35389, 0.35381, 0.35387,
                   0.35357, 0.35372, 0.35393, 0.35458]


def _stop_epoch(losses: list[float], min_delta: float, patience: int) -> tuple[int, int]:
    """(last epoch run, best epoch) under the worker's early-stopping rule."""
    from modelsvc.training.worker import TrainState, observe

    state, best = TrainState(), -1
    for epoch, loss in enumerate(losses):
        if observe(state, loss, min_delta):
            best = epoch
        if state.bad_epochs >= patience:
            return epoch, best
    return len(losses) - 1, best


def test_early_stopping_ignores_improvements_below_min_delta():
    # the demo's loss creeps down by 0.0002-0.0006 an epoch after epoch 2: those epochs do not count ...
    assert _stop_epoch(DEMO_VAL_LOSSES, min_delta=0.001, patience=2) == (4, 4)
    # ... but the best epoch is still the lowest loss, meaningful or not
    assert _stop_epoch(DEMO_VAL_LOSSES, min_delta=0.001, patience=3) == (5, 4)
    # min_delta 0 is the previous rule: any improvement resets the patience (the demo ran all 14 epochs)
    assert _stop_epoch(DEMO_VAL_LOSSES, min_delta=0.0, patience=3) == (13, 10)
    assert _stop_epoch([0.5, 0.5, 0.5], min_delta=0.0, patience=2) == (2, 0)  # equal is no improvement


def test_min_delta_reference_is_the_last_meaningful_loss():
    from modelsvc.training.worker import TrainState, observe

    state = TrainState()
    observe(state, 1.0, 0.01)
    for loss in (0.995, 0.992, 0.9905):  # each a new best, none 0.01 below 1.0
        assert observe(state, loss, 0.01)
    assert (state.bad_epochs, state.stop_ref_loss, state.best_val_loss) == (3, 1.0, 0.9905)
    observe(state, 0.989, 0.01)  # 0.011 below the reference: meaningful
    assert (state.bad_epochs, state.stop_ref_loss) == (0, 0.989)


def test_the_eager_adam_updates_as_torch_adam_does_without_importing_dynamo():
    """``loop.adam``: torch's Adam without the decorators that import ``torch._dynamo`` (1.1-1.8 s): the same
    weights and state bit for bit, state dicts interchangeable with torch's (checkpoints), in a fresh interpreter
    where nothing imported dynamo."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent("""
        import sys
        import torch
        from modelsvc.training.loop import _EagerAdam, adam

        def run(make, steps=6):
            torch.manual_seed(0)
            net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
            opt = make(net.parameters())
            x = torch.randn(32, 8)
            for _ in range(steps):
                opt.zero_grad()
                net(x).pow(2).mean().backward()
                opt.step()
            return net, opt

        ours, opt = run(lambda p: adam(p, lr=1e-2, weight_decay=1e-3))
        assert type(opt) is _EagerAdam
        opt.load_state_dict(opt.state_dict())
        assert "torch._dynamo" not in sys.modules, "dynamo imported"
        theirs, ref = run(lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3))
        assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state_dict()["state"][0][k], ref.state_dict()["state"][0][k]), k
        ref.load_state_dict(opt.state_dict())  # a checkpoint of ours resumes in torch's, and the reverse
        opt.load_state_dict(ref.state_dict())
        assert type(adam([torch.zeros(1, requires_grad=True)], lr=1.0, weight_decay=0.0)) is torch.optim.Adam
        print("ok")
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
