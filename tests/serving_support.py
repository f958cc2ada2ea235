"""A small demo store for the serving tests: demo data, ETL, a dataset, the online store materialized at the instant of
one impression, a trained model promoted to production, and a second (logistic) run to swap in.

Built once per test module (about a minute: materialize and a 2-epoch training dominate)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tests.conftest import CONFIGS, REPO_ROOT

START, DAYS = "2025-03-01", 6
DATASET_START, DATASET_END = "2025-03-02", "2025-03-06"
FAST = {"training": {"epochs": 2, "batch_size": 256, "early_stopping_patience": 5}, "ray": {"num_cpus": 2},
        "serving": {"reload_interval_s": 0.2}}


@dataclass
class ServingDemo:
    root: Path
    settings: Any
    at: datetime  # the materialization instant: one impression's time
    user_id: int  # the user of that impression
    event_id: str
    dataset: Any  # DatasetManifest
    run_id: str  # the trained model, promoted as version 1
    other_run_id: str  # a logistic pyfunc, for swaps
    users: list[int]

    def overrides(self, **over: Any) -> dict[str, Any]:
        base: dict[str, Any] = {"paths": {"root": str(self.root / "data")},
                                "features": {"repo_path": str(self.root / "feature_repo")}, **FAST}
        for k, v in over.items():
            base[k] = {**base.get(k, {}), **v}
        return base

    def load(self, **over: Any) -> Any:
        from modelsvc.config import load_settings

        return load_settings(self.root / "configs", **self.overrides(**over))


def copy_project(root: Path) -> None:
    shutil.copytree(CONFIGS, root / "configs")
    shutil.copytree(REPO_ROOT / "feature_repo", root / "feature_repo",
                    ignore=shutil.ignore_patterns("data", "__pycache__", "*.db"))


def pick_instant(dataset: pd.DataFrame) -> pd.Series:
    """An impression late in the range whose row has every feature (so the comparison covers both views)."""
    from modelsvc.dataset import FEATURES

    full = dataset.dropna(subset=FEATURES)
    return full.sort_values(["event_timestamp", "event_id"]).iloc[-1]


def build_serving_demo(root: Path) -> Iterator[ServingDemo]:
    from modelsvc.dataset import build_dataset, read_dataset
    from modelsvc.demo import generate_demo_data
    from modelsvc.etl import run_etl
    from modelsvc.features import materialize
    from modelsvc.registry import promote
    from modelsvc.training import train
    from tests.registry_support import TRUE_COEF, log_fake_run

    copy_project(root)
    demo = ServingDemo(root, None, datetime.min, 0, "", None, "", "", [])
    settings = demo.load()
    demo.settings = settings
    generate_demo_data(settings, users=300, days=DAYS, start_date=START, seed=3)
    run_etl(settings, start_date=START, end_date=DATASET_END)
    manifest = build_dataset(settings, start_date=DATASET_START, end_date=DATASET_END)
    row = pick_instant(read_dataset(manifest))
    demo.at = row["event_timestamp"].to_pydatetime()
    demo.user_id, demo.event_id, demo.dataset = int(row["user_id"]), str(row["event_id"]), manifest
    materialize(settings, end=demo.at)
    demo.run_id = train(settings).run_id
    promote(settings, run_id=demo.run_id, force=True, reason="serving tests")
    demo.other_run_id = log_fake_run(settings, None, coef=TRUE_COEF)
    demo.users = sorted(read_dataset(manifest, columns=["user_id"])["user_id"].unique().tolist())
    yield demo
