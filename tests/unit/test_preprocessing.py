"""Preprocessing: fitted on train only, robust to nulls and unknown values, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from modelsvc.dataset import CATEGORICAL_FEATURES, FEATURES, NUMERIC_FEATURES
from modelsvc.errors import DataError
from modelsvc.training.preprocessing import UNKNOWN_INDEX, Preprocessor


def frame(**cols) -> pd.DataFrame:
    base = {
        "total_orders_7d": [1, 2, 3, None],
        "avg_purchase_value_30d": [10.0, None, 30.0, 20.0],
        "last_seen_platform": ["web", "ios", None, "web"],
        "current_page_views_10m": [0, 4, 8, 4],
    }
    base.update(cols)
    return pd.DataFrame(base)


def fit(df: pd.DataFrame) -> Preprocessor:
    return Preprocessor.fit(df, NUMERIC_FEATURES, CATEGORICAL_FEATURES)


def test_numeric_standardised_with_train_mean_imputation_and_indicator():
    pre = fit(frame())
    assert pre.numeric["total_orders_7d"].mean == pytest.approx(2.0)
    assert pre.numeric["avg_purchase_value_30d"].mean == pytest.approx(20.0)
    num, _ = pre.transform(frame())
    k = len(NUMERIC_FEATURES)
    assert num.shape == (4, 2 * k)
    assert num.dtype == np.float32
    i = NUMERIC_FEATURES.index("total_orders_7d")
    assert num[3, i] == 0.0
    assert num[3, k + i] == 1.0
    assert num[0, k + i] == 0.0
    std = np.std([1, 2, 3])
    assert num[0, i] == pytest.approx((1 - 2) / std)


def test_unknown_and_missing_categories_go_to_the_unknown_bucket():
    pre = fit(frame())
    assert pre.categorical["last_seen_platform"] == ["ios", "web"]
    assert pre.cardinalities == [3]
    _, cat = pre.transform(frame(last_seen_platform=["web", "ios", "smart-fridge", None]))
    assert cat[:, 0].tolist() == [2, 1, UNKNOWN_INDEX, UNKNOWN_INDEX]


def test_all_null_column_gives_finite_output_and_indicator():
    df = frame(avg_purchase_value_30d=[None, None, None, None])
    pre = fit(df)
    num, _ = pre.transform(df)
    i, k = NUMERIC_FEATURES.index("avg_purchase_value_30d"), len(NUMERIC_FEATURES)
    assert np.isfinite(num).all()
    assert (num[:, i] == 0).all()
    assert (num[:, k + i] == 1).all()
    # a value at serving time is still standardised with the neutral stats, never NaN
    num2, _ = pre.transform(frame(avg_purchase_value_30d=[5.0, None, None, None]))
    assert num2[0, i] == pytest.approx(5.0)
    assert np.isfinite(num2).all()


def test_constant_column_does_not_divide_by_zero():
    pre = fit(frame(current_page_views_10m=[3, 3, 3, 3]))
    num, _ = pre.transform(frame(current_page_views_10m=[3, 4, None, 3]))
    assert np.isfinite(num).all()


def test_text_and_infinite_values_are_treated_as_missing():
    pre = fit(frame())
    num, _ = pre.transform(frame(avg_purchase_value_30d=["abc", np.inf, "30", None]))
    i, k = NUMERIC_FEATURES.index("avg_purchase_value_30d"), len(NUMERIC_FEATURES)
    assert num[:, k + i].tolist() == [1.0, 1.0, 0.0, 1.0]
    assert num[2, i] == pytest.approx((30 - 20) / pre.numeric["avg_purchase_value_30d"].std)


def test_json_round_trip_gives_identical_transform():
    pre = fit(frame())
    text = pre.to_json()
    json.loads(text)  # plain JSON, no pickle
    again = Preprocessor.from_json(text)
    a, b = pre.transform(frame()), again.transform(frame())
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_other_columns_are_ignored_and_a_missing_column_is_named():
    pre = fit(frame())
    num, cat = pre.transform(frame().assign(extra="x", is_clicked=1))
    assert num.shape[0] == 4
    assert cat.shape == (4, 1)
    with pytest.raises(DataError, match="current_page_views_10m"):
        pre.transform(frame().drop(columns=["current_page_views_10m"]))


def test_bad_format_version_is_refused():
    with pytest.raises(DataError, match="format_version"):
        Preprocessor.from_dict({"format_version": 99, "numeric": {}, "categorical": {}})


def test_fit_on_the_train_split_only(settings):
    """Validation/test rows with a very different distribution must not move the fitted statistics."""
    from modelsvc.training.trainer import _fit_preprocessor
    from tests.datasets import as_single_file, write_synthetic_dataset

    manifest, df = write_synthetic_dataset(settings, rows=600, seed=3)
    path = as_single_file(manifest)
    manifest.files = []  # as loaded from the older layout
    # rewrite the data file with shifted validation/test values and a platform only seen outside train
    shifted = pd.read_parquet(path)
    outside = shifted["split"] != "train"
    shifted.loc[outside, "avg_purchase_value_30d"] = 1e6
    shifted.loc[outside, "last_seen_platform"] = "only-in-validation"
    shifted.to_parquet(path, index=False)

    pre, train_rows = _fit_preprocessor(manifest)
    train = df[df["split"] == "train"]
    assert train_rows == len(train)
    assert pre.numeric["avg_purchase_value_30d"].mean == pytest.approx(train["avg_purchase_value_30d"].mean())
    assert pre.numeric["total_orders_7d"].mean == pytest.approx(train["total_orders_7d"].astype(float).mean())
    assert "only-in-validation" not in pre.categorical["last_seen_platform"]
    assert set(pre.input_columns) == set(FEATURES)


def test_matches_the_scikit_learn_pipeline_it_stands_for():
    """The hand-written Preprocessor equals scikit-learn's StandardScaler -> SimpleImputer(constant 0,
    add_indicator) for the numeric features and OrdinalEncoder (+1, unknown and missing -> 0) for the platform,
    on data with nulls, non-numeric text and values unseen in training (docs/training.md says why it is kept)."""
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder, StandardScaler

    from tests.datasets import synthetic_frame

    train = synthetic_frame(3000, seed=4)
    test = synthetic_frame(500, seed=5)
    test.loc[test.index[:20], "last_seen_platform"] = "smart-fridge"  # unseen
    test["total_orders_7d"] = test["total_orders_7d"].astype(object)
    test.loc[test.index[20:25], "total_orders_7d"] = "n/a"  # text: missing
    pre = fit(train)
    num, cat = pre.transform(test)

    def numeric(df):
        return df[NUMERIC_FEATURES].apply(pd.to_numeric, errors="coerce").astype("float64")

    def platform(df):
        col = df[CATEGORICAL_FEATURES].astype(object)
        return col.where(col.notna(), np.nan)

    sk_num = make_pipeline(StandardScaler(), SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=True,
                                                           keep_empty_features=True)).fit(numeric(train))
    sk_cat = OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1,
                            encoded_missing_value=-1).fit(platform(train))
    np.testing.assert_allclose(num, sk_num.transform(numeric(test)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(cat, sk_cat.transform(platform(test)).astype(np.int64) + 1)
