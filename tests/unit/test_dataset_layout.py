"""A dataset version's folder layout: bounded per-split files, the manifest written last (it commits the version),
readers that open only what they need, and the older single-file layout still read."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from modelsvc import dataset, storage
from modelsvc.config import load_settings
from modelsvc.dataset import SPLITS, list_versions, load_dataset, read_dataset, read_rows
from modelsvc.errors import DataError, NotFoundError
from tests.datasets import as_single_file, write_synthetic_dataset

COLUMNS = ["event_id", "is_clicked", "total_orders_7d"]


@pytest.fixture
def small_files(workdir: Path):
    """Settings whose versions have files of at most 300 rows in row groups of 100."""
    return load_settings(workdir / "configs", dataset={"file_rows": 300, "row_group_rows": 100})


def test_files_are_bounded_one_split_each_in_split_order_and_listed_in_the_manifest(small_files):
    manifest, df = write_synthetic_dataset(small_files, rows=2000)
    folder = Path(manifest.path)
    on_disk = json.loads((folder / "manifest.json").read_text())
    assert on_disk["format"] == 2
    assert sorted(p.name for p in folder.iterdir()) == sorted(["manifest.json", *(f["path"] for f in on_disk["files"])])
    assert [f["split"] for f in on_disk["files"]] == sorted((f["split"] for f in on_disk["files"]), key=SPLITS.index)
    for f in on_disk["files"]:
        pf = pq.ParquetFile(folder / f["path"])
        assert pf.metadata.num_rows == f["rows"] <= 300
        assert f["bytes"] == (folder / f["path"]).stat().st_size
        assert all(pf.metadata.row_group(i).num_rows <= 100 for i in range(pf.num_row_groups))
        assert set(pf.read(columns=["split"]).column(0).to_pylist()) == {f["split"]}  # files never mix splits
    for split in SPLITS:
        rows = sum(f["rows"] for f in on_disk["files"] if f["split"] == split)
        assert rows == manifest.splits[split].rows == int((df["split"] == split).sum())
    assert len(on_disk["files"]) == sum(-(-manifest.splits[s].rows // 300) for s in SPLITS)
    # read back: the same rows in the same order
    back = read_dataset(load_dataset(small_files))
    expect = df[back.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(back, expect, check_dtype=False)


def test_the_manifest_is_written_last_and_a_version_without_it_does_not_exist(small_files, monkeypatch):
    writes: list[str] = []
    real_open, real_write = storage.open_output, storage.write_bytes
    monkeypatch.setattr(storage, "open_output", lambda loc: (writes.append(str(loc)), real_open(loc))[1])
    monkeypatch.setattr(storage, "write_bytes", lambda loc, data: (writes.append(str(loc)), real_write(loc, data))[1])
    manifest, _ = write_synthetic_dataset(small_files, rows=1000)
    assert len(writes) == len(manifest.files) + 1
    assert writes[-1] == str(Path(manifest.path) / "manifest.json")

    (Path(manifest.path) / "manifest.json").unlink()  # as a build killed before its commit leaves it
    assert list_versions(small_files) == []
    with pytest.raises(NotFoundError, match="dataset 'ctr_training' not found"):
        load_dataset(small_files)
    again, _ = write_synthetic_dataset(small_files, rows=1000, version="20260102T000000Z")  # the next build
    assert list_versions(small_files) == [again.version]
    with pytest.raises(NotFoundError, match="has no version"):
        load_dataset(small_files, version=manifest.version)


def test_a_second_version_with_the_same_name_is_refused(small_files):
    write_synthetic_dataset(small_files, rows=500)
    with pytest.raises(DataError, match="already exists"):
        write_synthetic_dataset(small_files, rows=500)


def test_old_unmanifested_folders_are_removed_young_ones_kept(small_files):
    base = Path(small_files.paths.location("datasets")) / "ctr_training"
    old, young = base / "20200101T000000000000Z", base / dataset.datetime.now(dataset.timezone.utc).strftime(
        "%Y%m%dT%H%M%S%fZ")
    for folder in (old, young):
        folder.mkdir(parents=True)
        (folder / "train-00000.parquet").write_bytes(b"partial")
    manifest, _ = write_synthetic_dataset(small_files, rows=500)
    assert not old.exists()  # a killed build's leftovers
    assert young.is_dir()  # may be a build still running
    assert list_versions(small_files) == [manifest.version]


def test_a_shard_reads_only_the_files_and_row_groups_holding_its_rows(small_files, monkeypatch):
    manifest, df = write_synthetic_dataset(small_files, rows=3000)
    train = df[df["split"] == "train"].reset_index(drop=True)
    opened: list[str] = []
    real = dataset.open_file
    monkeypatch.setattr(dataset, "open_file", lambda loc: (opened.append(loc.rsplit("/", 1)[-1]), real(loc))[1])
    for start, stop in [(0, 10), (290, 310), (450, 1001), (len(train) - 5, len(train)), (0, len(train)), (7, 7)]:
        opened.clear()
        got = read_rows(manifest, "train", COLUMNS, start, stop).to_pandas()
        assert got["event_id"].tolist() == train["event_id"].iloc[start:stop].tolist(), (start, stop)
        first, last = start // 300, max(start, stop - 1) // 300
        if stop > start:
            assert opened == [f"train-{i:05d}.parquet" for i in range(first, last + 1)], (start, stop)
    val = read_rows(manifest, "validation", COLUMNS).to_pandas()
    assert val["event_id"].tolist() == df.loc[df["split"] == "validation", "event_id"].tolist()


def test_streaming_and_resident_reads_of_a_folder_match_the_rows(small_files):
    import torch

    from modelsvc.dataset import CATEGORICAL_FEATURES, NUMERIC_FEATURES
    from modelsvc.training.loop import StreamingBatches, read_split, shard_bounds, to_tensors
    from modelsvc.training.preprocessing import Preprocessor

    manifest, df = write_synthetic_dataset(small_files, rows=3000)
    train = df[df["split"] == "train"]
    pre = Preprocessor.fit(train, NUMERIC_FEATURES, CATEGORICAL_FEATURES)
    for rank in (0, 1, 2):
        start, stop = shard_bounds(len(train), rank, 3)
        expect = to_tensors(pre, train.iloc[start:stop], "is_clicked")[0]
        resident = to_tensors(pre, read_split(manifest, "train", [*pre.input_columns, "is_clicked"], start, stop),
                              "is_clicked")[0]
        np.testing.assert_array_equal(resident, expect)
        s = StreamingBatches(manifest, pre, "is_clicked", start=start, stop=stop, batch_size=128, seed=1, rank=rank,
                             device=torch.device("cpu"), chunk_rows=170)
        rows = torch.cat([n for n, _, _ in s.epoch(0)]).numpy()
        np.testing.assert_array_equal(np.sort(rows, axis=0), np.sort(expect, axis=0))


def test_the_older_single_file_layout_is_still_read(small_files):
    manifest, df = write_synthetic_dataset(small_files, rows=1200)
    as_single_file(manifest)
    old = load_dataset(small_files)
    assert old.format == 1
    assert old.files == []
    back = read_dataset(old)
    pd.testing.assert_frame_equal(back, df[back.columns].reset_index(drop=True), check_dtype=False)
    train = df[df["split"] == "train"].reset_index(drop=True)
    got = read_rows(old, "train", COLUMNS, 100, 500).to_pandas()
    assert got["event_id"].tolist() == train["event_id"].iloc[100:500].tolist()
    assert dataset.count_rows(old, "validation") == manifest.splits["validation"].rows


def test_a_missing_file_is_66_naming_it(small_files):
    manifest, _ = write_synthetic_dataset(small_files, rows=1000)
    gone = Path(manifest.path) / manifest.files[-1].path
    gone.unlink()
    with pytest.raises(NotFoundError) as info:
        load_dataset(small_files)
    assert info.value.message == f"dataset file {gone} is missing"


def test_the_manifest_reaches_workers_by_value():
    from modelsvc.training.worker import WorkerConfig

    fields = WorkerConfig.model_fields
    assert "data_file" not in fields
    assert fields["dataset"].annotation is dataset.DatasetManifest
