"""Raw events → the two feature tables (semantics in docs/data-contract.md).

The feature logic is SQL text written once (:func:`feature_sql`) and run by any warehouse engine; the few
things SQL dialects spell differently (timestamp arithmetic, structs) live in the tiny :data:`DIALECTS` table.

Algorithm: instead of recomputing 30 days of raw events for every snapshot day, events are first reduced to
per-user per-day partial aggregates (orders, exact purchase sum and count, the day's latest platform). Each such
day is a change point of its user's features: its aggregates enter the windows on that day and leave each
window (orders, purchases, the lookback that makes a row exist) the day it ends. Cumulative sums over each
user's change points, in day order, give the features from one change point to the next, and that state is
expanded to the snapshot days it covers (the latest platform comes from the latest day with one, while it is
inside the lookback). Work grows with the user-days, not with user-days x window length.
Purchase values are summed as DECIMAL(38, 9), so the sum does not depend on the order in which threads add
them: rerunning a day gives bit-identical values.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from pydantic import BaseModel

from modelsvc.config import EtlSettings, Settings
from modelsvc.errors import ConfigError, DataError, RetryableError, UsageError
from modelsvc.progress import NULL, Reporter
from modelsvc.timeutil import date_range, day_start
from modelsvc.warehouse.base import check_identifier

CHUNK_DAYS = 31  # snapshot days computed per query: bounds memory; each chunk re-reads its own lookback
USER_FEATURE_COLUMNS = ["user_id", "event_timestamp", "created_timestamp", "total_orders_7d",
                        "avg_purchase_value_30d", "last_seen_platform", "ds"]
REALTIME_FEATURE_COLUMNS = ["user_id", "event_timestamp", "created_timestamp", "current_page_views_10m", "ds"]
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True)
class Dialect:
    """How one SQL dialect spells the few non-portable expressions of the feature SQL.

    Every timestamp is UTC (engines run their session in UTC).
    """

    name: str
    ts_literal: Callable[[datetime], str]  # a UTC datetime → timestamp literal
    day_number: Callable[[str], str]  # timestamp expression → BIGINT days since 1970-01-01
    bucket_start_s: Callable[[str, int], str]  # (timestamp expression, width s) → BIGINT epoch s of its bucket
    ts_from_epoch_s: Callable[[str], str]  # BIGINT epoch seconds → timestamp
    day_of_epoch_s: Callable[[str], str]  # BIGINT epoch seconds (not negative) → BIGINT days since 1970-01-01
    struct: Callable[[Sequence[tuple[str, str]]], str]  # [(field, expression)] → struct (ordered by fields)
    arg_max: Callable[[str, str], str]  # (value, key) → aggregate: value of the row with the largest non-null key
    # (expression) → aggregate: the two largest non-null values as a list, largest first; None where the engine
    # has no such aggregate. With it, the latest platform is found with a cheap timestamp key and only the rare
    # user-days whose latest timestamp is shared are broken by event_id (a struct key costs ~0.5 s per 10M rows).
    max2: Callable[[str], str] | None = None
    # (value, order key) → window aggregate: the latest non-null value of the frame. The default is the portable
    # arg_max over the rows with a value; DuckDB's last_value(... IGNORE NULLS) is cheaper (~0.06 CPU-s per 10M
    # raw events)
    latest_in_frame: Callable[[str, str], str] | None = None
    # (first day, end day exclusive) → a set-returning SELECT expression giving each day number of the range; None
    # where the engine has none: the states are then expanded by a range join with a table of offsets (DuckDB's
    # unnest(range(...)) is ~0.15 CPU-s cheaper per 10M raw events than its piecewise merge join)
    days_between: Callable[[str, str], str] | None = None
    # (the days) → the SQL type of the ``ds`` column of the feature rows; None: the string literals. DuckDB's ENUM
    # of the chunk's days is one byte per row to sort and an Arrow dictionary to return (~0.1 CPU-s per 10M raw
    # events); the local writer reads it as the same 'YYYY-MM-DD' strings
    ds_type: Callable[[Sequence[date]], str] | None = None


DUCKDB = Dialect(
    name="duckdb",
    ts_literal=lambda dt: f"TIMESTAMPTZ '{dt.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S.%f}+00'",
    day_number=lambda e: f"(epoch_us({e}) // 86400000000)",
    bucket_start_s=lambda e, w: f"((epoch_us({e}) // {w * 1_000_000}) * {w})",
    ts_from_epoch_s=lambda e: f"to_timestamp({e})",
    day_of_epoch_s=lambda e: f"({e} // 86400)",  # integer division (no DOUBLE round trip per window)
    struct=lambda fields: "{" + ", ".join(f"'{k}': {v}" for k, v in fields) + "}",
    arg_max=lambda v, k: f"arg_max({v}, {k})",
    max2=lambda e: f"max({e}, 2)",
    latest_in_frame=lambda v, _: f"last_value({v} IGNORE NULLS)",
    days_between=lambda a, b: f"unnest(range({a}, {b}))",
    ds_type=lambda days: "ENUM(" + ", ".join(f"'{d.isoformat()}'" for d in days) + ")",
)

# HiveQL as spoken by HiveServer2 / the Spark Thrift server (session time zone UTC). Owned with warehouse/hive.py.
HIVE = Dialect(
    name="hive",
    ts_literal=lambda dt: f"TIMESTAMP '{dt.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S.%f}'",
    day_number=lambda e: f"CAST(floor(unix_timestamp({e}) / 86400) AS BIGINT)",
    bucket_start_s=lambda e, w: f"CAST(floor(unix_timestamp({e}) / {w}) * {w} AS BIGINT)",
    ts_from_epoch_s=lambda e: f"CAST(from_unixtime({e}) AS TIMESTAMP)",
    day_of_epoch_s=lambda e: f"CAST(floor({e} / 86400) AS BIGINT)",
    struct=lambda fields: "named_struct(" + ", ".join(f"'{k}', {v}" for k, v in fields) + ")",
    arg_max=lambda v, k: f"max_by({v}, {k})",
)

DIALECTS: dict[str, Dialect] = {"duckdb": DUCKDB, "hive": HIVE}


class FeatureSql(BaseModel):
    """The two SELECTs computing the feature tables for ``days`` (each ends with a ``ds`` column)."""

    days: list[date]
    raw_start: date  # first raw partition read (lookback)
    raw_end: date
    user_features: str
    realtime_features: str


class EtlReport(BaseModel):
    """What ``run_etl`` did."""

    start_date: date
    end_date: date
    days: int
    engine: str
    raw_start: date
    raw_events_read: int
    rows_written: dict[str, int]
    seconds: float
    events_per_s: float


def check_windows(etl: EtlSettings) -> None:
    """Window sizes the SQL relies on (ConfigError naming the key otherwise)."""
    for key in ("orders_window_days", "purchase_window_days"):
        if getattr(etl, key) > etl.lookback_days:
            raise ConfigError(f"etl.{key} ({getattr(etl, key)}) must not exceed etl.lookback_days "
                              f"({etl.lookback_days}): the ETL reads only lookback_days of raw events")
    if 1440 % etl.realtime_window_minutes:
        raise ConfigError(f"etl.realtime_window_minutes ({etl.realtime_window_minutes}) must divide a day "
                          "(1440 minutes) so that windows align to UTC days")


def _day_rows(days: Sequence[date], *, with_snapshot: Dialect | None = None, dialect: Dialect | None = None) -> str:
    rows = []
    for d in days:
        cols = f"CAST({(d - _EPOCH).days} AS BIGINT) AS day_num, '{d.isoformat()}' AS ds"
        if with_snapshot is not None:
            cols += f", {with_snapshot.ts_literal(day_start(d + timedelta(days=1)))} AS snapshot_ts"
        rows.append(f"SELECT {cols}")
    union = "\n    UNION ALL ".join(rows)
    if dialect is None or dialect.ds_type is None:
        return union
    snapshot = ", snapshot_ts" if with_snapshot is not None else ""
    return f"SELECT day_num, CAST(ds AS {dialect.ds_type(days)}) AS ds{snapshot} FROM (\n    {union}\n    ) t"


def _offset_rows(n: int) -> str:
    return "\n    UNION ALL ".join(f"SELECT CAST({k} AS BIGINT) AS k" for k in range(n))


def feature_sql(dialect: str | Dialect, *, days: Sequence[date], raw_table: str, etl: EtlSettings,
                created: datetime, ordered: bool = True) -> FeatureSql:
    """The feature SELECTs for the contiguous ``days`` reading ``raw_table`` in ``dialect``.

    ``raw_table`` must expose the canonical raw-event columns plus ``ds``; ``created`` becomes
    ``created_timestamp``. The statements read raw partitions [days[0] - (lookback - 1), days[-1]]. ``ordered``
    sorts the rows by day, then user (and window): what the local writer slices by day, and stable file contents;
    a server writing partitions itself needs no sort.
    """
    d = DIALECTS[dialect] if isinstance(dialect, str) else dialect
    raw = check_identifier(raw_table)
    days = sorted(days)
    if not days:
        raise UsageError("feature_sql needs at least one day")
    if (days[-1] - days[0]).days + 1 != len(days):
        raise UsageError("feature_sql needs contiguous days")
    lookback = etl.lookback_days
    raw_start = days[0] - timedelta(days=lookback - 1)
    first, last = (days[0] - _EPOCH).days, (days[-1] - _EPOCH).days
    created_lit = d.ts_literal(created)
    day_num = d.day_number("event_timestamp")
    # purchase values that are not finite numbers (NaN sorts above everything in both engines) count as null
    pv = "CASE WHEN event_type = 'order' AND purchase_value BETWEEN -1e18 AND 1e18 " \
         "THEN CAST(purchase_value AS DECIMAL(38, 9)) END"
    where = (f"ds >= '{raw_start.isoformat()}' AND ds <= '{days[-1].isoformat()}' "
             "AND user_id IS NOT NULL AND event_timestamp IS NOT NULL")

    # the latest event with a platform; equal timestamps are broken by the largest event_id
    if d.max2 is None:
        latest_key = d.struct([("t", "event_timestamp"), ("e", "event_id")])
        latest = f"{d.arg_max('platform', f'CASE WHEN platform IS NOT NULL THEN {latest_key} END')} AS platform"
        ties, source = "", "daily"
    else:
        # a timestamp key, and the two latest timestamps; only the user-days whose latest platform timestamp is
        # shared (rare) need the event_id: the largest among those events
        platform_ts = "CASE WHEN platform IS NOT NULL THEN event_timestamp END"
        latest = f"{d.arg_max('platform', platform_ts)} AS platform,\n           {d.max2(platform_ts)} AS latest2"
        top, second = "t.latest2[1]", "t.latest2[2]"
        ties = f"""
ties AS (
    SELECT e.user_id AS user_id, t.day_num AS day_num, {d.arg_max("e.platform", "e.event_id")} AS platform
    FROM (SELECT user_id, event_timestamp, event_id, platform FROM {raw}
          WHERE {where} AND platform IS NOT NULL) e
    JOIN daily t ON e.user_id = t.user_id AND e.event_timestamp = {top}
    WHERE {top} = {second}
    GROUP BY e.user_id, t.day_num
),"""
        ties += """
daily_p AS (
    SELECT d.user_id AS user_id, d.day_num AS day_num, d.n_orders AS n_orders, d.pv_sum AS pv_sum,
           d.pv_n AS pv_n, coalesce(x.platform, d.platform) AS platform
    FROM daily d LEFT JOIN ties x ON x.user_id = d.user_id AND x.day_num = d.day_num
),"""
        source = "daily_p"
    orders_w, purchase_w = etl.orders_window_days, etl.purchase_window_days
    platform_c = "CASE WHEN platform IS NOT NULL THEN c END"
    latest_platform = (d.latest_in_frame("platform", platform_c) if d.latest_in_frame is not None
                       else d.arg_max("platform", platform_c))
    # each state holds from its change point c until the next one (at most lookback days: a state that exists
    # has an event day in the lookback, whose own change point ends it); expanded to the snapshot days it covers
    if d.days_between is None:
        offsets = f"offsets AS (\n    {_offset_rows(lookback)}\n),\n"
        rolled = f"""SELECT st.user_id AS user_id, st.c + k.k AS day_num, st.orders AS orders, st.pv_sum AS pv_sum,
           st.pv_n AS pv_n, CASE WHEN st.platform_day > st.c + k.k - {lookback} THEN st.platform END AS platform
    FROM state st JOIN offsets k ON k.k < st.next_c - st.c AND st.c + k.k >= {first}
    WHERE st.present > 0"""
    else:
        offsets = ""
        span = d.days_between(f"CASE WHEN st.c > {first} THEN st.c ELSE {first} END",
                              f"CASE WHEN st.next_c < st.c + {lookback} THEN st.next_c ELSE st.c + {lookback} END")
        rolled = f"""SELECT user_id, day_num, orders, pv_sum, pv_n,
           CASE WHEN platform_day > day_num - {lookback} THEN platform END AS platform
    FROM (SELECT st.user_id AS user_id, {span} AS day_num, st.orders AS orders, st.pv_sum AS pv_sum,
                 st.pv_n AS pv_n, st.platform_day AS platform_day, st.platform AS platform
          FROM state st WHERE st.present > 0) e"""
    user_features = f"""
WITH snap AS (
    {_day_rows(days, with_snapshot=d, dialect=d)}
),
{offsets}daily AS (
    SELECT user_id, {day_num} AS day_num,
           COUNT(CASE WHEN event_type = 'order' THEN 1 END) AS n_orders,
           SUM({pv}) AS pv_sum,
           COUNT({pv}) AS pv_n,
           {latest}
    FROM {raw}
    WHERE {where} AND {day_num} >= {first - lookback + 1} AND {day_num} <= {last}
    GROUP BY user_id, {day_num}
),{ties}
changes AS (
    SELECT user_id, day_num AS c, CAST(0 AS INT) AS kind, n_orders AS orders, pv_sum, pv_n,
           CAST(1 AS BIGINT) AS present, platform
    FROM {source}
    UNION ALL
    SELECT user_id, day_num + {orders_w}, 1, -n_orders, NULL, 0, 0, NULL
    FROM {source} WHERE n_orders > 0 AND day_num + {orders_w} <= {last}
    UNION ALL
    SELECT user_id, day_num + {purchase_w}, 2, 0, -pv_sum, -pv_n, 0, NULL
    FROM {source} WHERE pv_n > 0 AND day_num + {purchase_w} <= {last}
    UNION ALL
    SELECT user_id, day_num + {lookback}, 3, 0, NULL, 0, -1, NULL
    FROM {source} WHERE day_num + {lookback} <= {last}
),
state AS (
    SELECT user_id, c,
           SUM(orders) OVER w AS orders,
           SUM(pv_sum) OVER w AS pv_sum,
           SUM(pv_n) OVER w AS pv_n,
           SUM(present) OVER w AS present,
           MAX(CASE WHEN platform IS NOT NULL THEN c END) OVER w AS platform_day,
           {latest_platform} OVER w AS platform,
           LEAD(c, 1, {last + 1}) OVER (PARTITION BY user_id ORDER BY c, kind) AS next_c
    FROM changes
    WINDOW w AS (PARTITION BY user_id ORDER BY c, kind ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
),
rolled AS (
    {rolled}
)
SELECT r.user_id AS user_id,
       s.snapshot_ts AS event_timestamp,
       {created_lit} AS created_timestamp,
       CAST(r.orders AS BIGINT) AS total_orders_7d,
       CAST(r.pv_sum AS DOUBLE) / CASE WHEN r.pv_n > 0 THEN r.pv_n END AS avg_purchase_value_30d,
       r.platform AS last_seen_platform,
       s.ds AS ds
FROM rolled r
JOIN snap s ON r.day_num = s.day_num
{"ORDER BY r.day_num, r.user_id" if ordered else ""}
"""

    width = etl.realtime_window_minutes * 60
    bucket = d.bucket_start_s("event_timestamp", width)
    realtime_features = f"""
WITH days AS (
    {_day_rows(days, dialect=d)}
),
pv AS (
    SELECT user_id, {bucket} AS bucket_s
    FROM {raw}
    WHERE {where} AND ds >= '{days[0].isoformat()}' AND event_type = 'page_view'
          AND {day_num} >= {first} AND {day_num} <= {last}
),
windows AS (
    SELECT user_id, bucket_s, COUNT(*) AS views
    FROM pv
    GROUP BY user_id, bucket_s
)
SELECT w.user_id AS user_id,
       {d.ts_from_epoch_s(f"w.bucket_s + {width}")} AS event_timestamp,
       {created_lit} AS created_timestamp,
       CAST(w.views AS BIGINT) AS current_page_views_10m,
       dy.ds AS ds
FROM windows w JOIN days dy ON {d.day_of_epoch_s("w.bucket_s")} = dy.day_num
{"ORDER BY dy.day_num, w.user_id, w.bucket_s" if ordered else ""}
"""
    return FeatureSql(days=list(days), raw_start=raw_start, raw_end=days[-1],
                      user_features=user_features, realtime_features=realtime_features)


def run_etl(settings: Settings, *, start_date: str | date | None, end_date: str | date | None,
            reporter: Reporter = NULL) -> EtlReport:
    """Compute ``user_features_precomputed`` and ``user_realtime_features`` for each day of the inclusive range
    (default: yesterday UTC), replacing each day's partitions atomically.

    Everything is validated before anything is written: dates (UsageError), window settings (ConfigError), the
    presence of a non-empty raw partition for every day and the contract of every raw file read, its data
    included: pages that decode, ``is_clicked`` 0/1, events in their partition's UTC day (DataError).
    """
    from modelsvc.warehouse import open_warehouse

    days = date_range(start_date, end_date)
    check_windows(settings.etl)
    t0 = time.perf_counter()
    raw = settings.tables.raw_events
    raw_start = days[0] - timedelta(days=settings.etl.lookback_days - 1)
    created = datetime.now(timezone.utc)
    rows = {settings.tables.user_features: 0, settings.tables.realtime_features: 0}
    with open_warehouse(settings) as wh:
        counts = wh.check_raw(raw, start=raw_start, end=days[-1])
        for day in days:
            if day not in counts:
                # [ops] 75, not 65: the day has not landed yet; cron / Prefect retry later
                raise RetryableError(f"table '{raw}' has no partition ds={day} yet: not yet available, retry later",
                                     hint="generate demo data with: modelsvc demo-data, or load that day's events")
            if counts[day] == 0:
                raise DataError(f"table '{raw}' partition ds={day} is empty (0 raw events)")
        events = sum(counts.values())
        reporter.log(f"etl {days[0]}..{days[-1]}: {events:,} raw events in {raw} from {raw_start}")

        def sql(chunk: Sequence[date], ordered: bool) -> FeatureSql:
            return feature_sql(wh.dialect, days=chunk, raw_table=raw, etl=settings.etl, created=created,
                               ordered=ordered)

        with reporter.task("etl", total=len(days)) as task:
            for i in range(0, len(days), CHUNK_DAYS):
                # every day of the chunk is replaced, also one without rows (a day without page views has no
                # realtime windows: its old partition must not survive)
                written = wh.write_features(sql, days[i:i + CHUNK_DAYS], task=task)
                for table, n in written.items():
                    rows[table] += n
    seconds = time.perf_counter() - t0
    return EtlReport(start_date=days[0], end_date=days[-1], days=len(days), engine=settings.warehouse.engine,
                     raw_start=raw_start, raw_events_read=events, rows_written=rows, seconds=round(seconds, 3),
                     events_per_s=round(events / seconds, 1) if seconds > 0 else 0.0)
