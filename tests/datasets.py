"""Synthetic training datasets in the real on-disk format, with a known click model (reusable by any test).

``write_synthetic_dataset(settings, rows=…)`` writes ``<datasets>/<name>/<version>/`` through
``modelsvc.dataset.write_dataset_version`` (``as_single_file`` turns it into the older one-file layout) and
returns the manifest plus the full frame, which also holds the
true click probability ``p_true`` of every row (not written to disk) so a test can compute the oracle AUC.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from modelsvc.dataset import FEATURES, DatasetManifest, SplitStats, write_dataset_version

PLATFORMS = ["web", "ios", "android"]
PLATFORM_EFFECT = {"web": -0.2, "ios": 0.5, "android": 0.1, None: -0.6}
FEATURE_REFS = [
    "user_features_precomputed:total_orders_7d",
    "user_features_precomputed:avg_purchase_value_30d",
    "user_features_precomputed:last_seen_platform",
    "user_realtime_features:current_page_views_10m",
]


def click_logit(df: pd.DataFrame) -> np.ndarray:
    """The known click model behind the synthetic labels (missing values carry signal too)."""
    orders = df["total_orders_7d"].astype("float64")
    purchase = df["avg_purchase_value_30d"].astype("float64")
    views = df["current_page_views_10m"].astype("float64")
    logit = -1.6 + 0.35 * orders.fillna(0).clip(upper=8) - 0.5 * orders.isna()
    logit = logit + 0.5 * np.log1p(purchase.fillna(0)) / 4 - 0.3 * purchase.isna()
    logit = logit + 0.12 * views.fillna(0).clip(upper=15) - 0.4 * views.isna()
    logit = logit + df["last_seen_platform"].map(lambda p: PLATFORM_EFFECT.get(p, -0.6)).astype("float64")
    return logit.to_numpy()


def synthetic_frame(rows: int, *, seed: int = 0, start: datetime | None = None, days: int = 10) -> pd.DataFrame:
    """Impressions with the four features (nulls included), the label, a time-based split and ``p_true``."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    offsets = np.sort(rng.uniform(0, days * 86400, rows))
    ts = pd.to_datetime([start + timedelta(seconds=float(s)) for s in offsets], utc=True)
    orders = pd.array(rng.poisson(1.5, rows), dtype="Int64")
    orders[rng.random(rows) < 0.1] = pd.NA
    purchase = pd.Series(rng.lognormal(3.0, 0.8, rows))
    purchase[(orders.fillna(0).to_numpy() == 0) | (rng.random(rows) < 0.1)] = np.nan
    platform = pd.Series(rng.choice(PLATFORMS, rows, p=[0.5, 0.3, 0.2]), dtype="object")
    platform[rng.random(rows) < 0.05] = None
    views = pd.array(rng.poisson(4.0, rows), dtype="Int64")
    views[rng.random(rows) < 0.2] = pd.NA
    df = pd.DataFrame({
        "event_id": [f"e{seed}-{i}" for i in range(rows)],
        "user_id": rng.integers(1, max(rows // 5, 2), rows).astype("int64"),
        "event_timestamp": ts,
        "total_orders_7d": orders,
        "avg_purchase_value_30d": purchase.to_numpy(),
        "last_seen_platform": platform.to_numpy(),
        "current_page_views_10m": views,
    })
    df["p_true"] = 1.0 / (1.0 + np.exp(-click_logit(df)))
    df["is_clicked"] = (rng.random(rows) < df["p_true"].to_numpy()).astype("int64")
    n_train, n_val = int(rows * 0.7), int(rows * 0.15)
    df["split"] = ["train"] * n_train + ["validation"] * n_val + ["test"] * (rows - n_train - n_val)
    return df


def write_synthetic_dataset(settings, *, rows: int = 5000, seed: int = 0, name: str | None = None,
                            version: str = "20260101T000000Z", days: int = 10) -> tuple[DatasetManifest,
                                                                                          pd.DataFrame]:
    """Write one dataset version (real format) and return (manifest, frame with ``p_true``)."""
    name = name or settings.dataset.name
    df = synthetic_frame(rows, seed=seed, days=days)
    on_disk = df[["event_id", "user_id", "event_timestamp", "is_clicked", "split", *FEATURES]]
    splits = {}
    for split in ("train", "validation", "test"):
        part = df[df["split"] == split]
        splits[split] = SplitStats(rows=len(part), label_rate=float(part["is_clicked"].mean()) if len(part) else None,
                                   start=part["event_timestamp"].min() if len(part) else None,
                                   end=part["event_timestamp"].max() if len(part) else None)
    fingerprint = hashlib.sha256(pd.util.hash_pandas_object(on_disk.astype(str), index=False).values.tobytes())
    manifest = DatasetManifest(
        name=name,
        version=version,
        path="",
        created_at=datetime.now(timezone.utc),
        start_date=df["event_timestamp"].min().strftime("%Y-%m-%d"),
        end_date=df["event_timestamp"].max().strftime("%Y-%m-%d"),
        feature_refs=FEATURE_REFS,
        rows=len(df),
        label_rate=float(df["is_clicked"].mean()),
        splits=splits,
        null_rate={c: float(df[c].isna().mean()) for c in FEATURES},
        time_range=(df["event_timestamp"].min().to_pydatetime(), df["event_timestamp"].max().to_pydatetime()),
        fingerprint=fingerprint.hexdigest(),
        extra={"synthetic": True, "seed": seed},
    )
    return write_dataset_version(settings, name, version, on_disk, manifest), df


def as_single_file(manifest: DatasetManifest) -> Path:
    """Turn a written (local) version into the older single-file layout (format 1: one ``data.parquet`` of all
    splits, a manifest without files) and return that file: how versions built before the folder layout look,
    and a file a test can rewrite (a corrupt label, a missing split) whatever the manifest says."""
    import pyarrow.parquet as pq

    from modelsvc.dataset import DATA_FILE, MANIFEST_FILE, read_table

    folder = Path(manifest.path)
    table = read_table(manifest)
    for f in manifest.files:
        (folder / f.path).unlink()
    pq.write_table(table, folder / DATA_FILE, row_group_size=1_000_000)
    old = manifest.model_dump(mode="json", exclude={"format", "files"})
    (folder / MANIFEST_FILE).write_text(json.dumps(old, indent=2))
    return folder / DATA_FILE
