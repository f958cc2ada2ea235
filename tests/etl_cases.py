"""ETL semantic cases as data: raw events in, expected feature rows out. Engine-independent.

Each :class:`EtlCase` is run with :func:`run_case` against any warehouse engine (``settings.warehouse.engine``):
it writes the events through ``open_warehouse(settings).write_partitions``, runs ``modelsvc.etl.run_etl`` and
returns the rows of both feature tables for the case's days, in a normalised form comparable with the expected
rows (``created_timestamp`` dropped, timestamps as aware UTC datetimes, sorted). :func:`check_case` asserts.

    from tests.etl_cases import CASES, check_case
    @pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
    def test_hive_etl(case, hive_settings): check_case(case, hive_settings)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import Any

RAW_COLUMNS = ["event_id", "user_id", "event_timestamp", "event_type", "platform", "purchase_value", "is_clicked"]


def ts(text: str) -> datetime:
    """'2024-03-10 10:00:00[.ffffff]' (UTC) → aware datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def ev(event_id: str, user_id: int, when: str, event_type: str, platform: str | None = "ios",
       purchase_value: float | None = None, is_clicked: int | None = None) -> dict[str, Any]:
    if event_type == "impression" and is_clicked is None:
        is_clicked = 0
    return {"event_id": event_id, "user_id": user_id, "event_timestamp": ts(when), "event_type": event_type,
            "platform": platform, "purchase_value": purchase_value, "is_clicked": is_clicked}


def uf(user_id: int, ds: str, orders: int, avg: float | None, platform: str | None) -> dict[str, Any]:
    """An expected user_features_precomputed row (event_timestamp = start of ds + 1 day)."""
    from datetime import timedelta

    snap = datetime.combine(date.fromisoformat(ds) + timedelta(days=1), datetime.min.time(), timezone.utc)
    return {"user_id": user_id, "event_timestamp": snap, "total_orders_7d": orders,
            "avg_purchase_value_30d": avg, "last_seen_platform": platform, "ds": ds}


def rt(user_id: int, window_end: str, views: int, ds: str) -> dict[str, Any]:
    """An expected user_realtime_features row."""
    return {"user_id": user_id, "event_timestamp": ts(window_end), "current_page_views_10m": views, "ds": ds}


@dataclass
class EtlCase:
    name: str
    events: list[dict[str, Any]]
    start: str
    end: str
    user_features: list[dict[str, Any]]
    realtime: list[dict[str, Any]] = field(default_factory=list)


CASES: list[EtlCase] = [
    EtlCase(
        # snapshot of 2024-03-10 is T = 03-11 00:00: orders window [03-04 00:00, T), purchase window [02-10, T)
        name="window_edges",
        start="2024-03-10", end="2024-03-11",
        events=[
            ev("a01", 1, "2024-02-09 23:59:59.999999", "order", "web", 1000.0),  # outside every window (not read)
            ev("a02", 1, "2024-02-10 00:00:00", "order", "web", 40.0),  # exactly T-30d: in D's 30d, not D+1's
            ev("a03", 1, "2024-03-03 23:59:59.999999", "order", "web", 20.0),  # just before T-7d: 30d only
            ev("a04", 1, "2024-03-04 00:00:00", "order", "web", 10.0),  # exactly T-7d: included
            ev("a05", 1, "2024-03-10 23:59:59.999999", "order", "ios", 30.0),  # just before T
            ev("a06", 1, "2024-03-11 00:00:00", "order", "android", 100.0),  # exactly T: excluded from D
            ev("b01", 6, "2024-02-10 12:00:00", "page_view", "web"),  # inactive user: only D's 30-day window
            ev("b02", 5, "2024-02-09 12:00:00", "page_view", "web"),  # too old for both days: no rows
        ],
        user_features=[
            uf(1, "2024-03-10", 2, 25.0, "ios"),
            uf(6, "2024-03-10", 0, None, "web"),
            uf(1, "2024-03-11", 2, 40.0, "android"),
        ],
    ),
    EtlCase(
        name="no_orders_unknown_platform_nulls",
        start="2024-03-10", end="2024-03-10",
        events=[
            ev("c01", 2, "2024-03-10 09:00:00", "impression", "web", is_clicked=1),  # no orders: 0 and null
            ev("d01", 3, "2024-03-10 10:00:00", "impression", "smart_tv"),  # unknown platform is kept
            ev("d02", 3, "2024-03-10 11:00:00", "impression", None),  # null platform: skipped for last seen
            ev("d03", 3, "2024-03-10 12:00:00", "order", None, None),  # order without value: counted, no avg
            ev("d04", 3, "2024-03-09 12:00:00", "order", "", 7.5),  # empty string is a platform value
        ],
        user_features=[
            uf(2, "2024-03-10", 0, None, "web"),
            uf(3, "2024-03-10", 2, 7.5, "smart_tv"),
        ],
    ),
    EtlCase(
        # equal timestamps: the event with the largest event_id wins last_seen_platform
        name="latest_platform_tie_break",
        start="2024-03-10", end="2024-03-10",
        events=[
            ev("e09", 4, "2024-03-10 08:00:00", "impression", "ios"),
            ev("e10", 4, "2024-03-10 08:00:00", "impression", "android"),
            ev("e08", 4, "2024-03-10 08:00:00", "impression", "web"),
            ev("f01", 7, "2024-03-10 08:00:00", "impression", "web"),  # the latest event across days wins
            ev("f02", 7, "2024-03-09 08:00:00", "impression", "ios"),
        ],
        user_features=[uf(4, "2024-03-10", 0, None, "android"), uf(7, "2024-03-10", 0, None, "web")],
    ),
    EtlCase(
        # windows [W-10m, W) aligned to UTC 10-minute boundaries; the window of a day's last events ends at the
        # next midnight but belongs to the day of its events
        name="realtime_windows",
        start="2024-03-10", end="2024-03-11",
        events=[
            ev("g01", 2, "2024-03-10 10:00:00", "page_view", "web"),  # on a boundary: window [10:00, 10:10)
            ev("g02", 2, "2024-03-10 10:09:59.999999", "page_view", "web"),
            ev("g03", 2, "2024-03-10 10:10:00", "page_view", "web"),  # next window
            ev("g04", 2, "2024-03-10 10:12:00", "impression", "web"),  # not a page view
            ev("g05", 2, "2024-03-10 23:55:00", "page_view", "ios"),  # window ends 03-11 00:00, ds 03-10
            ev("g06", 2, "2024-03-11 00:00:00", "page_view", "ios"),
            ev("g07", 8, "2024-03-10 10:05:00", "order", "web", 5.0),  # orders make no window
        ],
        user_features=[
            uf(2, "2024-03-10", 0, None, "ios"),
            uf(8, "2024-03-10", 1, 5.0, "web"),
            uf(2, "2024-03-11", 0, None, "ios"),
            uf(8, "2024-03-11", 1, 5.0, "web"),
        ],
        realtime=[
            rt(2, "2024-03-10 10:10:00", 2, "2024-03-10"),
            rt(2, "2024-03-10 10:20:00", 1, "2024-03-10"),
            rt(2, "2024-03-11 00:00:00", 1, "2024-03-10"),
            rt(2, "2024-03-11 00:10:00", 1, "2024-03-11"),
        ],
    ),
]


def events_table(events: list[dict[str, Any]]):
    """The raw events as an arrow table in the contract's types, ``ds`` = UTC date of the event."""
    import pyarrow as pa

    schema = pa.schema([
        ("event_id", pa.string()), ("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
        ("event_type", pa.string()), ("platform", pa.string()), ("purchase_value", pa.float64()),
        ("is_clicked", pa.int32()), ("ds", pa.string()),
    ])
    rows = [{**e, "ds": e["event_timestamp"].date().isoformat()} for e in events]
    return pa.Table.from_pylist(rows, schema=schema)


def _normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = {k: v for k, v in r.items() if k != "created_timestamp"}
        for k, v in r.items():
            if isinstance(v, datetime):
                r[k] = v.replace(tzinfo=timezone.utc) if v.tzinfo is None else v.astimezone(timezone.utc)
            elif isinstance(v, date):
                r[k] = v.isoformat()
        r["ds"] = str(r["ds"])
        out.append(r)
    return sorted(out, key=lambda r: (r["ds"], r["user_id"], r["event_timestamp"]))


def run_case(case: EtlCase, settings: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Load the case's events, run the ETL, return (user_features rows, realtime rows) for the case's days."""
    from modelsvc.etl import run_etl
    from modelsvc.warehouse import open_warehouse

    with open_warehouse(settings) as wh:
        wh.write_partitions(settings.tables.raw_events, events_table(case.events))
    run_etl(settings, start_date=case.start, end_date=case.end)
    s, e = date.fromisoformat(case.start), date.fromisoformat(case.end)
    with open_warehouse(settings) as wh:
        users = wh.read(settings.tables.user_features, start=s, end=e).to_pylist()
        realtime = wh.read(settings.tables.realtime_features, start=s, end=e).to_pylist() \
            if wh.partitions(settings.tables.realtime_features) else []
    return _normal(users), _normal(realtime)


def same_rows(got: list[dict[str, Any]], expected: list[dict[str, Any]]) -> bool:
    if len(got) != len(expected):
        return False
    for g, x in zip(got, _normal(expected), strict=True):
        if set(g) != set(x):
            return False
        for k, v in x.items():
            if isinstance(v, float) and g[k] is not None:
                if not math.isclose(g[k], v, rel_tol=1e-12, abs_tol=1e-12):
                    return False
            elif g[k] != v:
                return False
    return True


def check_case(case: EtlCase, settings: Any) -> None:
    users, realtime = run_case(case, settings)
    assert same_rows(users, case.user_features), f"{case.name}: user features\n got {users}\n want " \
                                                 f"{_normal(case.user_features)}"
    assert same_rows(realtime, case.realtime), f"{case.name}: realtime\n got {realtime}\n want " \
                                               f"{_normal(case.realtime)}"


def random_case(  # noqa: C901 - one branch per planted edge case, read top to bottom
    seed: int, *, users: int = 40, start: str = "2024-02-01", end: str = "2024-02-15",
                lookback: int = 30, orders_days: int = 7, purchase_days: int = 30, window_min: int = 10) -> EtlCase:
    """Random raw events (edges on purpose: midnights, exact window starts, 10-minute boundaries, equal
    timestamps, null/unknown platforms, NaN/inf/missing purchase values, null users, events older than the
    lookback) with the expected rows computed by brute force from the contract (docs/data-contract.md)."""
    import random
    from datetime import timedelta
    from decimal import Decimal

    rnd = random.Random(seed)
    d0, d1 = date.fromisoformat(start), date.fromisoformat(end)
    first_event_day = d0 - timedelta(days=lookback + 3)  # some events are older than any lookback
    events: list[dict[str, Any]] = []
    n = 0

    def stamp(day: date) -> datetime:
        base = datetime.combine(day, datetime.min.time(), timezone.utc)
        kind = rnd.random()
        if kind < 0.1:
            return base  # midnight: a snapshot time T, and the start of the windows T-7d and T-30d
        if kind < 0.25:
            return base + timedelta(minutes=window_min * rnd.randrange(1440 // window_min))  # a window boundary
        if kind < 0.3:
            return base + timedelta(days=1, microseconds=-1)  # the last microsecond of the day
        return base + timedelta(microseconds=rnd.randrange(86_400_000_000))

    activity = {user: rnd.choice([0.02, 0.05, 0.1, 0.3, 0.6]) for user in range(1, users + 1)}  # days with events
    day = first_event_day
    while day <= d1:
        for user in range(1, users + 1):
            if rnd.random() > activity[user]:
                continue
            times = [stamp(day) for _ in range(rnd.randint(1, 5))]
            if rnd.random() < 0.2:
                times.append(times[0])  # an equal timestamp: the tie-break decides
            for when in times:
                n += 1
                kind = rnd.choices(["page_view", "order", "impression"], weights=[6, 1, 2])[0]
                value: float | None = None
                if kind == "order" or rnd.random() < 0.05:  # values on other events are ignored
                    value = rnd.choice([round(rnd.uniform(0.5, 300), 2)] * 6 + [None, float("nan"), float("inf")])
                events.append({
                    "event_id": f"r{seed}-{rnd.randrange(10**6):06d}-{n}",
                    "user_id": None if rnd.random() < 0.01 else user,
                    "event_timestamp": when, "event_type": kind,
                    "platform": rnd.choice(["ios", "android", "web", "web", None, "tv"]),
                    "purchase_value": value,
                    "is_clicked": rnd.randint(0, 1) if kind == "impression" else None,
                })
        day += timedelta(days=1)
    rnd.shuffle(events)

    user_rows, realtime_rows = [], []
    snap_day = d0
    while snap_day <= d1:
        t = datetime.combine(snap_day + timedelta(days=1), datetime.min.time(), timezone.utc)
        per_user: dict[int, list[dict[str, Any]]] = {}
        for e in events:
            if e["user_id"] is not None and t - timedelta(days=lookback) <= e["event_timestamp"] < t:
                per_user.setdefault(e["user_id"], []).append(e)
        for user, evs in per_user.items():
            orders = [e for e in evs if e["event_type"] == "order"]
            n_orders = sum(1 for e in orders if e["event_timestamp"] >= t - timedelta(days=orders_days))
            values = [Decimal(repr(e["purchase_value"])) for e in orders
                      if e["event_timestamp"] >= t - timedelta(days=purchase_days)
                      and e["purchase_value"] is not None and math.isfinite(e["purchase_value"])]
            with_platform = [e for e in evs if e["platform"] is not None]
            latest = max(with_platform, key=lambda e: (e["event_timestamp"], e["event_id"]), default=None)
            user_rows.append(uf(user, snap_day.isoformat(), n_orders,
                                float(sum(values)) / len(values) if values else None,
                                latest["platform"] if latest else None))
        snap_day += timedelta(days=1)
    windows: dict[tuple[int, int], int] = {}
    width = window_min * 60
    for e in events:
        when = e["event_timestamp"]
        if e["user_id"] is not None and e["event_type"] == "page_view" and d0 <= when.date() <= d1:
            bucket = int(when.timestamp()) // width * width
            windows[(e["user_id"], bucket)] = windows.get((e["user_id"], bucket), 0) + 1
    for (user, bucket), views in windows.items():
        end_ts = datetime.fromtimestamp(bucket + width, timezone.utc)
        realtime_rows.append({"user_id": user, "event_timestamp": end_ts, "current_page_views_10m": views,
                              "ds": datetime.fromtimestamp(bucket, timezone.utc).date().isoformat()})
    return EtlCase(name=f"random_{seed}", events=events, start=start, end=end, user_features=user_rows,
                   realtime=realtime_rows)


RANDOM_CASES = [random_case(1, users=120), random_case(2, users=120)]
