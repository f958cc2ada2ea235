"""Demo data: determinism, shape of the events, and clicks drawn from the features the ETL serves."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow.compute as pc
import pytest

from modelsvc.demo import click_logit, generate_demo_data
from modelsvc.errors import UsageError
from modelsvc.etl import run_etl
from modelsvc.warehouse import open_warehouse

SMALL = {"users": 300, "days": 9, "start_date": "2025-01-01"}


def _files(settings) -> dict[str, bytes]:
    root = settings.paths.resolve("warehouse")
    # the tables' files; not the writer's hidden .staging folder (replaced partitions kept for readers)
    return {str(f.relative_to(root)): f.read_bytes() for f in sorted(root.rglob("*"))
            if f.is_file() and not f.relative_to(root).parts[0].startswith(".")}


def test_same_seed_gives_identical_files_other_seed_differs(settings):
    r1 = generate_demo_data(settings, seed=3, **SMALL)
    first = _files(settings)
    r2 = generate_demo_data(settings, seed=3, **SMALL)
    assert _files(settings) == first
    assert r1.model_dump(exclude={"seconds"}) == r2.model_dump(exclude={"seconds"})
    generate_demo_data(settings, seed=4, **SMALL)
    assert _files(settings) != first


def test_events_follow_the_contract(settings):
    report = generate_demo_data(settings, seed=1, **SMALL)
    with open_warehouse(settings) as wh:
        assert wh.partitions(settings.tables.raw_events) == [date(2025, 1, d) for d in range(1, 10)]
        raw = wh.read_raw()
        oracle = wh.read(settings.tables.click_oracle)
    assert raw.num_rows == report.events > 0
    ids = raw.column("event_id")
    assert pc.count_distinct(ids).as_py() == raw.num_rows
    types = raw.column("event_type").to_numpy(zero_copy_only=False)
    assert set(types) == {"page_view", "impression", "order"}
    platforms = set(raw.column("platform").to_pylist())
    assert {"ios", "android", "web"} <= platforms and platforms - {"ios", "android", "web"}  # a few unknown
    clicked = raw.column("is_clicked").to_numpy(zero_copy_only=False)
    value = raw.column("purchase_value").to_numpy(zero_copy_only=False)
    imp, order = types == "impression", types == "order"
    assert set(clicked[imp].astype(int)) == {0, 1} and np.isnan(clicked[~imp].astype(float)).all()
    assert (value[order] > 0).all() and np.isnan(value[~order].astype(float)).all()
    # each event lies in the partition of its UTC date
    day = pc.strftime(raw.column("event_timestamp"), format="%Y-%m-%d")
    assert pc.all(pc.equal(day, raw.column("ds"))).as_py()
    assert oracle.num_rows == report.impressions == int(imp.sum())
    assert report.clicks == int(clicked[imp].sum())
    p = oracle.column("p_click").to_numpy()
    assert ((p > 0) & (p < 1)).all()


def test_oracle_equals_the_click_model_on_the_etl_features(settings):
    """p_click of each impression = sigmoid(click_logit(features served by the ETL tables + as-of join))."""
    generate_demo_data(settings, seed=2, **SMALL)
    run_etl(settings, start_date="2025-01-01", end_date="2025-01-09")
    with open_warehouse(settings) as wh:
        joined = wh.query(f"""
            WITH imp AS (SELECT e.event_id, e.user_id, e.event_timestamp, o.p_click
                         FROM {settings.tables.raw_events} e JOIN {settings.tables.click_oracle} o
                           ON e.event_id = o.event_id)
            SELECT imp.event_id, imp.p_click,
                   (SELECT arg_max(CASE WHEN f.event_timestamp >= imp.event_timestamp - INTERVAL 7 DAY
                                        THEN {{'o': f.total_orders_7d, 'a': f.avg_purchase_value_30d,
                                               'p': f.last_seen_platform}} END, f.event_timestamp)
                    FROM {settings.tables.user_features} f
                    WHERE f.user_id = imp.user_id AND f.event_timestamp <= imp.event_timestamp) AS off,
                   (SELECT arg_max(CASE WHEN r.event_timestamp >= imp.event_timestamp - INTERVAL 30 MINUTE
                                        THEN r.current_page_views_10m END, r.event_timestamp)
                    FROM {settings.tables.realtime_features} r
                    WHERE r.user_id = imp.user_id AND r.event_timestamp <= imp.event_timestamp) AS views
            FROM imp ORDER BY imp.event_id
        """)
    rows = joined.to_pylist()
    assert len(rows) > 1000
    off = [r["off"] or {"o": None, "a": None, "p": None} for r in rows]
    logit = click_logit(np.array([o["o"] if o["o"] is not None else np.nan for o in off], float),
                        np.array([o["a"] if o["a"] is not None else np.nan for o in off], float),
                        np.array([o["p"] for o in off], object),
                        np.array([r["views"] if r["views"] is not None else np.nan for r in rows], float))
    expected = 1 / (1 + np.exp(-logit))
    np.testing.assert_allclose([r["p_click"] for r in rows], expected, rtol=1e-12)
    assert any(r["views"] is not None for r in rows) and any(r["views"] is None for r in rows)


@pytest.mark.slow
def test_default_size_and_oracle_auc(settings):
    report = generate_demo_data(settings)
    assert 300_000 <= report.impressions <= 600_000
    assert 0.75 <= report.oracle_auc <= 0.85
    assert 0.05 <= report.click_rate <= 0.25


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"users": 0}, "--users must be at least 1"),
    ({"days": 0}, "--days must be between 1 and 366"),
    ({"start_date": "2025-02-30"}, "--start-date: '2025-02-30' is not a date"),
    ({"seed": -1}, "--seed must be >= 0"),
])
def test_bad_arguments(settings, kwargs, message):
    args = {**SMALL, "seed": 1, **kwargs}
    with pytest.raises(UsageError, match=message):
        generate_demo_data(settings, **args)


def test_a_second_run_with_a_smaller_range_replaces_the_whole_generated_tables(settings):
    """No event of the first generation survives: its later days are emptied, event ids stay unique."""
    from datetime import date

    from modelsvc.warehouse import open_warehouse

    generate_demo_data(settings, users=30, days=4, start_date="2025-01-01", seed=1)
    second = generate_demo_data(settings, users=30, days=2, start_date="2025-01-01", seed=2)
    with open_warehouse(settings) as wh:
        raw = wh.read(settings.tables.raw_events)
        oracle = wh.read(settings.tables.click_oracle)
        days = wh.partitions(settings.tables.raw_events)
    assert days == [date(2025, 1, d) for d in (1, 2, 3, 4)]  # the older days are still partitions, emptied
    assert raw.num_rows == second.events
    assert sorted(set(raw.column("ds").to_pylist())) == ["2025-01-01", "2025-01-02"]
    assert len(set(raw.column("event_id").to_pylist())) == raw.num_rows
    assert oracle.num_rows == second.impressions
