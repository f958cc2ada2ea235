"""The pure parts of build-dataset: time split, leakage guard, fingerprint, argument checks (fast, no Feast)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from modelsvc.config import SplitSettings
from modelsvc.dataset import FEATURES, assign_split, build_dataset, fingerprint, finish_join, split_cutoffs
from modelsvc.errors import ConfigError, DataError, UsageError

TS_COLS = {"offline_feature_ts_us": FEATURES[:3], "realtime_feature_ts_us": FEATURES[3:]}


def _times(seed: int, n: int = 500, ties: bool = True) -> pd.Series:
    rng = np.random.default_rng(seed)
    secs = rng.integers(0, 10 * 86400, n)
    if ties:
        secs[: n // 5] = secs[n // 5: 2 * (n // 5)]  # many equal timestamps
    return pd.Series(pd.Timestamp("2026-01-01T00:00:00Z") + pd.to_timedelta(secs, unit="s"))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("val", "test"), [(0.15, 0.15), (0.3, 0.1), (0.0, 0.2)])
def test_split_is_by_time(seed, val, test):
    times = _times(seed)
    split = assign_split(times, SplitSettings(validation_fraction=val, test_fraction=test))
    by = {s: times[split == s] for s in ("train", "validation", "test")}
    assert by["train"].max() < by["test"].min()
    if val:
        assert by["train"].max() < by["validation"].min()
        assert by["validation"].max() < by["test"].min()
    else:
        assert len(by["validation"]) == 0
    # equal timestamps never straddle a boundary
    assert times.groupby(times).apply(lambda g: split[g.index].nunique()).max() == 1
    # fractions are of the time range
    v, t = split_cutoffs(times, SplitSettings(validation_fraction=val, test_fraction=test))
    span = times.max() - times.min()
    assert abs((times.max() - t) - span * test) < pd.Timedelta(milliseconds=1)
    assert abs((t - v) - span * val) < pd.Timedelta(milliseconds=1)


def test_split_does_not_depend_on_row_order():
    times = _times(3)
    s = SplitSettings()
    shuffled = times.sample(frac=1, random_state=1)
    assert assign_split(shuffled, s).sort_index().equals(assign_split(times, s).sort_index())


def test_explicit_cutoffs():
    times = _times(4)
    s = SplitSettings(validation_start="2026-01-05", test_start="2026-01-08T12:00:00")
    split = assign_split(times, s)
    assert split.eq(np.where(times >= pd.Timestamp("2026-01-08T12:00:00Z"), "test",
                             np.where(times >= pd.Timestamp("2026-01-05T00:00:00Z"), "validation", "train"))).all()


def test_reversed_cutoffs_are_a_config_error():
    with pytest.raises(ConfigError, match="test_start 2026-01-02 00:00:00\\+00:00 is before"):
        assign_split(_times(1), SplitSettings(validation_start="2026-01-05", test_start="2026-01-02"))


def test_empty_splits_are_data_errors():
    times = _times(1)
    with pytest.raises(DataError, match="leaves no training rows"):
        assign_split(times, SplitSettings(validation_start="2025-01-01", test_start="2025-02-01"))
    with pytest.raises(DataError, match="leaves the 'test' split empty"):
        assign_split(times, SplitSettings(validation_start="2026-01-05", test_start="2027-01-01"))
    one_time = pd.Series([pd.Timestamp("2026-01-01T00:00:00Z")] * 10)
    with pytest.raises(DataError, match="leaves no training rows"):
        assign_split(one_time, SplitSettings())


def _joined(n: int = 6, **overrides) -> pa.Table:
    ts = pd.Series(pd.date_range("2026-01-02", periods=n, freq="h", tz="UTC")).dt.as_unit("us")
    us = ts.astype("int64")
    data = {
        "event_id": [f"e{i}" for i in range(n)], "user_id": list(range(n)), "event_timestamp": ts,
        "is_clicked": [i % 2 for i in range(n)],
        "total_orders_7d": pd.array([1, None, 3, 4, 5, 6][:n], dtype="Int64"),
        "avg_purchase_value_30d": [1.0] * n, "last_seen_platform": ["web"] * n,
        "current_page_views_10m": pd.array([None] * n, dtype="Int64"),
        "offline_feature_ts_us": pd.array(list(us - 3_600_000_000), dtype="Int64"),
        "realtime_feature_ts_us": pd.array([None] * n, dtype="Int64"),
    }
    data.update(overrides)
    return pa.Table.from_pandas(pd.DataFrame(data), preserve_index=False)


def test_finish_join_drops_timestamps_and_orders_columns(settings):
    df = finish_join(settings, _joined(), TS_COLS)
    assert list(df.columns) == ["event_id", "user_id", "event_timestamp", "is_clicked", "split", *FEATURES]
    assert df["split"].tolist() == ["train", "train", "train", "train", "validation", "test"]


def test_leakage_guard(settings):
    ts = pd.Series(pd.date_range("2026-01-02", periods=6, freq="h", tz="UTC")).dt.as_unit("us")
    late = ts.astype("int64").tolist()
    late[2] += 1  # one feature row 1 µs after its impression
    table = _joined(realtime_feature_ts_us=pd.array(late, dtype="Int64"))
    with pytest.raises(DataError, match="leakage: 1 rows joined a feature row later than the impression "
                                        r"\(realtime_feature_ts_us; e.g. event e2"):
        finish_join(settings, table, TS_COLS)
    # exactly at the impression time is allowed
    late[2] -= 1
    finish_join(settings, _joined(realtime_feature_ts_us=pd.array(late, dtype="Int64")), TS_COLS)


def test_empty_and_all_null_joins_are_data_errors(settings):
    with pytest.raises(DataError, match="returned no rows"):
        finish_join(settings, _joined().slice(0, 0), TS_COLS)
    nulls = {f: pd.array([None] * 6, dtype="Int64" if f != "last_seen_platform" else "object") for f in FEATURES}
    nulls["avg_purchase_value_30d"] = [np.nan] * 6
    with pytest.raises(DataError, match="every feature is null in all 6 rows"):
        finish_join(settings, _joined(**nulls), TS_COLS)


def test_fingerprint_is_order_independent_and_content_sensitive(settings):
    df = finish_join(settings, _joined(), TS_COLS)
    assert fingerprint(df) == fingerprint(df.sample(frac=1, random_state=3))
    changed = df.copy()
    changed.loc[0, "avg_purchase_value_30d"] = 1.5
    assert fingerprint(changed) != fingerprint(df)


def test_fingerprint_of_rows_in_canonical_order_skips_the_sort_and_equals_the_sorted_ones():
    from modelsvc.dataset import _in_canonical_order

    ts = pd.to_datetime(["2025-01-01 00:00", "2025-01-01 00:00", "2025-01-01 00:01", "2025-01-01 00:01"], utc=True)
    df = pd.DataFrame({"event_id": ["b", "c", "a", "a2"], "event_timestamp": ts, "v": [1.0, 2.0, 3.0, 4.0]})
    swapped = df.iloc[[1, 0, 2, 3]].reset_index(drop=True)  # the same timestamps, ids out of order in a tie
    later_first = df.iloc[[2, 3, 0, 1]].reset_index(drop=True)
    assert _in_canonical_order(df)
    assert _in_canonical_order(df.assign(event_timestamp=ts.tz_convert(None)))
    assert not _in_canonical_order(swapped)
    assert not _in_canonical_order(later_first)
    assert not _in_canonical_order(df.assign(event_id=["b", None, "a", 1]).iloc[[0, 1, 3, 2]])
    # what the sort orders differently from the values: NaT goes last, categories by their codes
    with_nat = pd.DataFrame({"event_id": ["a", "b"], "event_timestamp": pd.to_datetime([None, "1969-12-31"]),
                             "v": [1.0, 2.0]})
    assert not _in_canonical_order(with_nat)
    assert fingerprint(with_nat) == fingerprint(with_nat.iloc[[1, 0]])
    categories = df.assign(event_id=pd.Categorical(df["event_id"], categories=["c", "b", "a2", "a"]))
    assert not _in_canonical_order(categories)
    assert fingerprint(df) == fingerprint(swapped) == fingerprint(later_first)
    assert fingerprint(df) != fingerprint(df.assign(v=[1.0, 2.0, 3.0, 5.0]))


@pytest.mark.parametrize(("start", "end", "message"), [
    ("2026-01-05", "2026-01-01", "--end-date 2026-01-01 is before --start-date 2026-01-05"),
    ("2026-13-01", "2026-01-01", "--start-date: '2026-13-01' is not a date"),
])
def test_bad_ranges_are_usage_errors(settings, start, end, message):
    with pytest.raises(UsageError, match=message):
        build_dataset(settings, start_date=start, end_date=end)


def test_bad_name_is_a_usage_error(settings):
    with pytest.raises(UsageError, match="dataset name 'bad name'"):
        build_dataset(settings, start_date="2026-01-01", end_date="2026-01-01", name="bad name")
