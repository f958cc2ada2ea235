"""build_dataset end to end on small tables written in the warehouse layout: output, manifest, errors."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest

from modelsvc.dataset import FEATURES, SPLITS, build_dataset, load_dataset, read_dataset
from modelsvc.errors import DataError, NotFoundError
from tests.feature_data import T0, brute_force_pit, random_case, write_impressions, write_offline, write_realtime

pytestmark = pytest.mark.slow

COLUMNS = ["event_id", "user_id", "event_timestamp", "is_clicked", "split", *FEATURES]


@pytest.fixture
def case(workdir):
    off, rt, imp = random_case(7, users=20, days=5, impressions=300)
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    write_impressions(root, imp)
    return off, rt, imp


def _days(imp: pd.DataFrame) -> tuple[str, str]:
    days = imp["event_timestamp"].dt.strftime("%Y-%m-%d")
    return days.min(), days.max()


def test_build_dataset_output_and_manifest(settings, case):
    off, _rt, imp = case
    start, end = _days(imp)
    m = build_dataset(settings, start_date=start, end_date=end)

    df = read_dataset(m)
    assert list(df.columns) == COLUMNS
    assert len(df) == len(imp) == m.rows
    assert sorted(df["event_id"]) == sorted(imp["event_id"])
    assert df["event_timestamp"].is_monotonic_increasing

    # features are the point-in-time values
    ref = brute_force_pit(imp, off, ["total_orders_7d"], timedelta(days=7)).set_index("event_id")
    got = df.set_index("event_id")["total_orders_7d"]
    want = ref.loc[got.index, "total_orders_7d"]
    assert [None if pd.isna(v) else int(v) for v in got] == [None if pd.isna(v) else int(v) for v in want]

    # split by time: train < validation <= ... < test, every split non-empty
    t = {s: df.loc[df["split"] == s, "event_timestamp"] for s in SPLITS}
    assert all(len(t[s]) for s in SPLITS)
    assert t["train"].max() < t["validation"].min()
    assert t["validation"].max() < t["test"].min()

    # manifest
    on_disk = json.loads((Path(m.path) / "manifest.json").read_text())
    assert on_disk["fingerprint"] == m.fingerprint
    assert len(m.fingerprint) == 64
    assert m.name == settings.dataset.name
    assert m.start_date == start
    assert m.end_date == end
    assert {s: st.rows for s, st in m.splits.items()} == df["split"].value_counts().to_dict()
    assert m.label_rate == pytest.approx(df["is_clicked"].mean())
    assert m.splits["test"].label_rate == pytest.approx(df.loc[df["split"] == "test", "is_clicked"].mean())
    assert m.null_rate == pytest.approx({f: df[f].isna().mean() for f in FEATURES})
    assert 0 < m.null_rate["current_page_views_10m"] < 1
    assert m.time_range == (df["event_timestamp"].min().to_pydatetime(), df["event_timestamp"].max().to_pydatetime())
    assert m.feature_refs == [
        "user_offline_features:total_orders_7d", "user_offline_features:avg_purchase_value_30d",
        "user_offline_features:last_seen_platform", "user_realtime_features:current_page_views_10m"]
    assert load_dataset(settings).version == m.version


def test_same_inputs_same_fingerprint_new_inputs_new_one(settings, case, workdir):
    off, _rt, imp = case
    start, end = _days(imp)
    first = build_dataset(settings, start_date=start, end_date=end, name="fp")
    second = build_dataset(settings, start_date=start, end_date=end, name="fp")
    assert first.version != second.version
    assert first.fingerprint == second.fingerprint

    changed = off.copy()
    changed["total_orders_7d"] = changed["total_orders_7d"] + 1
    import shutil

    shutil.rmtree(workdir / "data" / "warehouse" / "user_features_precomputed")
    write_offline(workdir / "data", changed)
    third = build_dataset(settings, start_date=start, end_date=end, name="fp")
    assert third.fingerprint != first.fingerprint


def test_explicit_split_cutoffs(workdir, case):
    from modelsvc.config import load_settings

    _off, _rt, imp = case
    start, end = _days(imp)
    v, t = "2026-01-04T00:00:00Z", "2026-01-05T12:00:00Z"
    s = load_settings(workdir / "configs", dataset={"split": {"validation_start": v, "test_start": t}})
    df = read_dataset(build_dataset(s, start_date=start, end_date=end))
    ts = df["event_timestamp"]
    assert (df["split"] == "train").eq(ts < pd.Timestamp(v)).all()
    assert (df["split"] == "test").eq(ts >= pd.Timestamp(t)).all()


def test_no_impressions_is_a_data_error(settings, case):
    with pytest.raises(DataError, match="no impressions in table 'raw_events' between 2025-06-01 and 2025-06-02"):
        build_dataset(settings, start_date="2025-06-01", end_date="2025-06-02")


def test_all_null_features_is_a_data_error(settings, workdir):
    _, _, imp = random_case(3, users=5, days=2, impressions=50)
    root = workdir / "data"
    # feature rows only long after every impression: nothing within ttl, nothing before
    late = T0 + timedelta(days=40)
    write_offline(root, pd.DataFrame({
        "user_id": [0], "event_timestamp": [late], "created_timestamp": [late], "total_orders_7d": [1],
        "avg_purchase_value_30d": [1.0], "last_seen_platform": ["web"]}))
    write_realtime(root, pd.DataFrame({"user_id": [0], "event_timestamp": [late], "created_timestamp": [late],
                                       "current_page_views_10m": [1]}))
    write_impressions(root, imp)
    start, end = _days(imp)
    with pytest.raises(DataError, match="every feature is null"):
        build_dataset(settings, start_date=start, end_date=end)


def test_missing_feature_table_is_not_found(settings, workdir):
    _, _, imp = random_case(3, users=5, days=2, impressions=50)
    write_impressions(workdir / "data", imp)
    start, end = _days(imp)
    with pytest.raises(NotFoundError, match="feature table 'user_features_precomputed' not found"):
        build_dataset(settings, start_date=start, end_date=end)


def test_missing_raw_table_is_not_found(settings, workdir):
    with pytest.raises(NotFoundError, match="table 'raw_events' not found"):
        build_dataset(settings, start_date="2026-01-01", end_date="2026-01-02")


@pytest.mark.parametrize(("spoil", "message"), [
    ("null_user", r"^3 impressions in 'raw_events' between \S+ and \S+ have no 'user_id'$"),
    ("repeated_id", r"^1 event_id value\(s\) repeat among the impressions in 'raw_events' between \S+ and \S+ "
                    r"\(event_id must be unique; e\.g\. 'dup' 2 times\)$"),
])
def test_impressions_that_break_the_contract_are_refused(settings, workdir, spoil, message):
    """An impression without a user cannot be joined and a repeated event_id is counted twice: both are refused
    by name, and no dataset version is written."""
    off, rt, imp = random_case(5, users=10, days=3, impressions=60)
    if spoil == "null_user":
        imp["user_id"] = imp["user_id"].astype("Int64")
        imp.loc[imp.index[:3], "user_id"] = None
    else:
        imp.loc[imp.index[:2], "event_id"] = "dup"
    root = workdir / "data"
    write_offline(root, off)
    write_realtime(root, rt)
    write_impressions(root, imp)
    start, end = _days(imp)
    with pytest.raises(DataError, match=message):
        build_dataset(settings, start_date=start, end_date=end)
    assert not (root / "datasets").exists() or not any((root / "datasets").rglob("manifest.json"))
