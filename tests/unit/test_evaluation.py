"""Pure helpers of evaluate: the pyfunc input frame and the scoring of one model's predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modelsvc.evaluation import model_input, score
from modelsvc.metrics import roc_auc


def test_model_input_keeps_only_the_features_with_the_signature_types() -> None:
    df = pd.DataFrame({
        "event_id": ["a", "b"], "is_clicked": [0, 1],
        "total_orders_7d": pd.Series([1, 2], dtype="int64"),
        "avg_purchase_value_30d": [np.nan, 3.5],
        "last_seen_platform": ["ios", np.nan],
        "current_page_views_10m": pd.Series([4, 0], dtype="int64"),
    })
    out = model_input(df)
    assert list(out.columns) == ["total_orders_7d", "avg_purchase_value_30d", "last_seen_platform",
                                 "current_page_views_10m"]
    assert out["total_orders_7d"].dtype == "float64" and out["current_page_views_10m"].dtype == "float64"
    assert out["last_seen_platform"].tolist() == ["ios", None]
    assert df["total_orders_7d"].dtype == "int64"  # the caller's frame is untouched


def test_score_slices_by_key_and_reports_single_class_slices_as_none() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400).astype(float)
    p = np.clip(0.3 * y + rng.random(400) * 0.7, 0, 1)
    slices = np.array(["ios"] * 200 + ["web"] * 199 + ["missing"], dtype=object)
    y[-1] = 1.0
    m = score(y, p, slices, bins=10, model_uri="runs:/x/model")
    assert set(m.slices) == {"ios", "web", "missing"}
    assert m.slices["missing"].rows == 1 and m.slices["missing"].auc is None
    assert m.slices["ios"].auc == pytest.approx(roc_auc(y[:200], p[:200]))
    assert m.auc == pytest.approx(roc_auc(y, p)) and m.calibration_error is not None
