"""Helpers for the evaluation/registry tests: a small dataset with a known click model, its oracle table, and
runs that log a real pyfunc (a logistic function of the features: a stand-in for our trained model)."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

# the generator's true click model: logit = bias + w_orders * orders + w_views * views + w_web * is_web
TRUE_COEF = {"bias": -2.0, "orders": 0.5, "views": 0.15, "web": -0.4}
CONSTANT_COEF = {"bias": 0.0, "orders": 0.0, "views": 0.0, "web": 0.0}  # p = 0.5 for all: AUC 0.5
PLATFORMS = np.array(["ios", "android", "web", None], dtype=object)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def logistic_p(df: pd.DataFrame, coef: dict[str, float]) -> np.ndarray:
    orders = pd.to_numeric(df["total_orders_7d"], errors="coerce").fillna(0).to_numpy(dtype=float)
    views = pd.to_numeric(df["current_page_views_10m"], errors="coerce").fillna(0).to_numpy(dtype=float)
    web = (df["last_seen_platform"] == "web").to_numpy(dtype=float)
    return _sigmoid(coef["bias"] + coef["orders"] * orders + coef["views"] * views + coef["web"] * web)


def make_frame(n: int = 20_000, seed: int = 7, start: datetime | None = None) -> pd.DataFrame:
    """n impressions over 10 days with the four features, labels drawn from TRUE_COEF, split by time."""
    rng = np.random.default_rng(seed)
    start = start or datetime(2026, 1, 1, tzinfo=timezone.utc)
    offsets = np.sort(rng.uniform(0, 10 * 86400, n))
    df = pd.DataFrame({
        "event_id": [f"e{seed}-{i:06d}" for i in range(n)],
        "user_id": rng.integers(1, 500, n).astype("int64"),
        "event_timestamp": pd.to_datetime([start + timedelta(seconds=float(s)) for s in offsets], utc=True),
        "total_orders_7d": rng.poisson(2.0, n).astype("int64"),
        "avg_purchase_value_30d": np.where(rng.random(n) < 0.2, np.nan, rng.gamma(2.0, 20.0, n)),
        "last_seen_platform": PLATFORMS[rng.integers(0, 4, n)],
        "current_page_views_10m": rng.poisson(3.0, n).astype("int64"),
    })
    df["p_true"] = logistic_p(df, TRUE_COEF)
    df["is_clicked"] = (rng.random(n) < df["p_true"]).astype("int64")
    cut_val, cut_test = int(n * 0.7), int(n * 0.85)
    df["split"] = np.where(np.arange(n) < cut_val, "train", np.where(np.arange(n) < cut_test, "validation", "test"))
    return df


def make_dataset(settings: Any, *, name: str = "ctr_training", version: str = "20260101T000000",
                 n: int = 20_000, seed: int = 7, oracle: bool = True) -> Any:
    """Write a dataset version (and, with ``oracle``, the demo oracle table) and return its manifest."""
    from modelsvc.dataset import DatasetManifest, SplitStats, write_dataset_version

    df = make_frame(n, seed)
    if oracle:
        write_oracle(settings, df)
    data = df.drop(columns=["p_true"])
    splits = {s: SplitStats(rows=int((data["split"] == s).sum()),
                            label_rate=float(data.loc[data["split"] == s, "is_clicked"].mean()))
              for s in ("train", "validation", "test")}
    ts = data["event_timestamp"]
    manifest = DatasetManifest(
        name=name, version=version, path="", created_at=datetime.now(timezone.utc),
        start_date=str(ts.min().date()), end_date=str(ts.max().date()), rows=len(data),
        label_rate=float(data["is_clicked"].mean()), splits=splits,
        null_rate={c: float(data[c].isna().mean()) for c in data.columns},
        time_range=(ts.min().to_pydatetime(), ts.max().to_pydatetime()), fingerprint=f"fp-{name}-{version}-{seed}",
    )
    return write_dataset_version(settings, name, version, data, manifest)


def write_oracle(settings: Any, df: pd.DataFrame) -> None:
    """The demo oracle table as Hive-style Parquet partitions under <warehouse>/<table>/ds=…/."""
    folder = settings.paths.resolve("warehouse") / settings.tables.click_oracle
    days = df["event_timestamp"].dt.strftime("%Y-%m-%d")
    for ds, part in df.groupby(days):
        out = folder / f"ds={ds}"
        out.mkdir(parents=True, exist_ok=True)
        part[["event_id", "p_true"]].rename(columns={"p_true": "p_click"}).to_parquet(out / "part-0.parquet",
                                                                                     index=False)


def _model_class() -> type:
    import mlflow

    class LogisticModel(mlflow.pyfunc.PythonModel):
        """p_click = sigmoid of a linear function of the raw features (a fake of our trained model)."""

        def __init__(self, coef: dict[str, float]) -> None:
            self.coef = dict(coef)

        def predict(self, context: Any, model_input: pd.DataFrame, params: Any = None) -> pd.DataFrame:
            return pd.DataFrame({"p_click": logistic_p(model_input, self.coef)})

    return LogisticModel


def log_fake_run(settings: Any, manifest: Any | None, coef: dict[str, float] | None = None,
                 extra_tags: dict[str, str] | None = None) -> str:
    """Log an MLflow run with a pyfunc at artifact path ``model`` and train's dataset tags; returns the run id."""
    import cloudpickle
    import mlflow

    from modelsvc.tracking import ensure_experiment, mlflow_client

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    mlflow_client(settings)
    exp = ensure_experiment(settings)
    tags = {}
    if manifest is not None:
        tags = {"modelsvc.dataset.name": manifest.name, "modelsvc.dataset.version": manifest.version,
                "modelsvc.dataset.fingerprint": manifest.fingerprint}
    tags.update(extra_tags or {})
    client = mlflow_client(settings)
    run = client.create_run(exp, tags=tags)
    with mlflow.start_run(run_id=run.info.run_id):
        mlflow.pyfunc.log_model(name="model", python_model=_model_class()(coef or TRUE_COEF),
                                pip_requirements=["mlflow", "pandas", "numpy"])
    return str(run.info.run_id)


def mark_evaluated(settings: Any, run_id: str, *, verdict: str = "passed", against: str = "none",
                   auc: float = 0.7) -> None:
    """Set the tags ``evaluate`` writes (for unit tests of the registry bookkeeping only)."""
    from modelsvc.tracking import mlflow_client

    client = mlflow_client(settings)
    client.set_tag(run_id, "modelsvc.eval.verdict", verdict)
    client.set_tag(run_id, "modelsvc.eval.production_version", against)
    client.log_metric(run_id, "eval_auc", auc)


_TEMPLATE_DB: list[str] = []


def fresh_mlflow_db(settings: Any) -> None:
    """Put an empty, already migrated MLflow SQLite store in place (creating one runs migrations: seconds).

    The template is built once per test process; each test gets its own copy.
    """
    import shutil
    import tempfile
    from pathlib import Path

    if not _TEMPLATE_DB:
        import atexit

        from mlflow.tracking import MlflowClient

        folder = tempfile.mkdtemp(prefix="modelsvc-mlflow-template-")
        atexit.register(shutil.rmtree, folder, True)
        path = Path(folder) / "mlflow.db"
        MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
        _TEMPLATE_DB.append(str(path))
    target = settings.paths.resolve("mlflow")
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_TEMPLATE_DB[0], target / "mlflow.db")
