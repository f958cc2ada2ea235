"""Training datasets: point-in-time joined, split by time, versioned Parquet with a manifest.

``build_dataset`` (the ``build-dataset`` command) is added by the features work; this module also holds the
on-disk format every later step reads: ``load_dataset`` and ``DatasetManifest``.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from modelsvc.config import Settings
from modelsvc.errors import DataError, NotFoundError
from modelsvc.warehouse.base import check_identifier

if TYPE_CHECKING:
    import pandas as pd

FEATURES = ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform", "current_page_views_10m"]
NUMERIC_FEATURES = ["total_orders_7d", "avg_purchase_value_30d", "current_page_views_10m"]
CATEGORICAL_FEATURES = ["last_seen_platform"]
SPLITS = ("train", "validation", "test")
DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


class SplitStats(BaseModel):
    rows: int
    label_rate: float | None
    start: datetime | None = None
    end: datetime | None = None


class DatasetManifest(BaseModel):
    """What a dataset version holds; written beside its data as manifest.json."""

    name: str
    version: str
    path: str = Field(description="folder of this version (data.parquet, manifest.json)")
    created_at: datetime
    start_date: str
    end_date: str
    entity: str = "user_id"
    label: str = "is_clicked"
    features: list[str] = Field(default_factory=lambda: list(FEATURES))
    feature_refs: list[str] = Field(default_factory=list)
    rows: int
    label_rate: float | None
    splits: dict[str, SplitStats]
    null_rate: dict[str, float]
    time_range: tuple[datetime, datetime] | None
    fingerprint: str
    extra: dict[str, Any] = Field(default_factory=dict)

    @property
    def data_path(self) -> Path:
        return Path(self.path) / DATA_FILE


def datasets_root(settings: Settings) -> Path:
    return settings.paths.resolve("datasets")


def list_versions(settings: Settings, name: str | None = None) -> list[str]:
    """Versions of a dataset, oldest first (version names sort by creation time)."""
    name = check_identifier(name or settings.dataset.name, what="dataset name")
    base = datasets_root(settings) / name
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and (p / MANIFEST_FILE).is_file())


def load_dataset(settings: Settings, name: str | None = None, version: str | None = None) -> DatasetManifest:
    """The manifest of ``name`` at ``version`` (default: the latest version)."""
    name = check_identifier(name or settings.dataset.name, what="dataset name")
    versions = list_versions(settings, name)
    if not versions:
        raise NotFoundError(
            f"dataset '{name}' not found under {datasets_root(settings)}",
            hint="build it with: modelsvc build-dataset --start-date D1 --end-date D2",
        )
    chosen = version or versions[-1]
    folder = datasets_root(settings) / name / chosen
    if chosen not in versions:
        raise NotFoundError(f"dataset '{name}' has no version '{chosen}' (latest: {versions[-1]})")
    manifest = DatasetManifest.model_validate_json((folder / MANIFEST_FILE).read_text())
    manifest.path = str(folder)
    return manifest


def read_dataset(manifest: DatasetManifest, *, split: str | None = None,
                 columns: list[str] | None = None) -> pd.DataFrame:
    """The rows of a dataset version (optionally one split) as pandas."""
    import pyarrow.parquet as pq

    filters = [("split", "=", split)] if split else None
    try:
        table = pq.read_table(manifest.data_path, columns=columns, filters=filters)
    except FileNotFoundError:
        raise NotFoundError(f"dataset file {manifest.data_path} is missing") from None
    return table.to_pandas()


def write_dataset_version(settings: Settings, name: str, version: str, df: pd.DataFrame,
                          manifest: DatasetManifest) -> DatasetManifest:
    """Write data + manifest to a temporary folder, then rename it into place (never a half dataset)."""
    name = check_identifier(name, what="dataset name")
    base = datasets_root(settings) / name
    base.mkdir(parents=True, exist_ok=True)
    final = base / version
    if final.exists():
        raise DataError(f"dataset version {final} already exists")
    tmp = base / f".tmp-{version}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        df.to_parquet(tmp / DATA_FILE, index=False, row_group_size=1_000_000)
        manifest.path = str(final)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest.model_dump(mode="json"), indent=2))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
