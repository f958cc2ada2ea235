"""Feature tables and raw impressions written directly in the warehouse layout (docs/architecture.md), and a
brute-force point-in-time join to check Feast's against.

``<root>/warehouse/<table>/ds=YYYY-MM-DD/part-00000.parquet``; the ``ds`` of a feature row is the day before its
``event_timestamp`` for snapshots (T = start of ds+1) and the day of the window end for realtime rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
PLATFORMS = ["web", "ios", "android"]

OFFLINE_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("created_timestamp", pa.timestamp("us", tz="UTC")), ("total_orders_7d", pa.int64()),
    ("avg_purchase_value_30d", pa.float64()), ("last_seen_platform", pa.string()),
])
REALTIME_SCHEMA = pa.schema([
    ("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("created_timestamp", pa.timestamp("us", tz="UTC")), ("current_page_views_10m", pa.int64()),
])
RAW_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("user_id", pa.int64()), ("event_timestamp", pa.timestamp("us", tz="UTC")),
    ("event_type", pa.string()), ("platform", pa.string()), ("purchase_value", pa.float64()),
    ("is_clicked", pa.int32()),
])


def write_table(root: Path, table: str, df: pd.DataFrame, schema: pa.Schema, ds: pd.Series) -> None:
    """Write ``df`` partitioned by the ``ds`` strings given (one file per partition)."""
    base = root / "warehouse" / table
    for day, idx in df.groupby(ds.to_numpy()).groups.items():
        folder = base / f"ds={day}"
        folder.mkdir(parents=True, exist_ok=True)
        part = pa.Table.from_pandas(df.loc[idx].reset_index(drop=True), schema=schema, preserve_index=False)
        pq.write_table(part, folder / "part-00000.parquet")


def _ds(ts: pd.Series, *, snapshot: bool) -> pd.Series:
    shifted = ts - pd.Timedelta(days=1) if snapshot else ts
    return shifted.dt.strftime("%Y-%m-%d")


def write_offline(root: Path, df: pd.DataFrame) -> None:
    write_table(root, "user_features_precomputed", df, OFFLINE_SCHEMA, _ds(df["event_timestamp"], snapshot=True))


def write_realtime(root: Path, df: pd.DataFrame) -> None:
    write_table(root, "user_realtime_features", df, REALTIME_SCHEMA, _ds(df["event_timestamp"], snapshot=False))


def write_impressions(root: Path, df: pd.DataFrame) -> None:
    raw = df.assign(event_type="impression", platform="web", purchase_value=np.nan)
    write_table(root, "raw_events", raw[RAW_SCHEMA.names], RAW_SCHEMA, df["event_timestamp"].dt.strftime("%Y-%m-%d"))


def random_case(seed: int, *, users: int = 30, days: int = 6, impressions: int = 400,
                offline_ttl: timedelta = timedelta(days=7), realtime_ttl: timedelta = timedelta(minutes=30),
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(offline, realtime, impressions) with the edge cases planted: impressions exactly at a feature row's
    time, exactly at ttl after it, 1 µs past ttl, and feature rows sharing (user, event_timestamp) that differ
    in created_timestamp (the later created one must win)."""
    rng = np.random.default_rng(seed)
    us = pd.Timedelta(microseconds=1)

    # daily snapshots at midnight for most users/days; some missing
    rows = []
    for d in range(1, days + 1):
        for u in range(users):
            if rng.random() < 0.8:
                t = T0 + timedelta(days=d)
                rows.append((u, t, t + timedelta(minutes=int(rng.integers(1, 60)))))
    off = pd.DataFrame(rows, columns=["user_id", "event_timestamp", "created_timestamp"])
    # duplicates: same (user, event_timestamp), a later created_timestamp and different values
    dup = off.sample(n=max(1, len(off) // 10), random_state=seed).copy()
    dup["created_timestamp"] = dup["created_timestamp"] + pd.Timedelta(minutes=5)
    off = pd.concat([off, dup], ignore_index=True)
    n = len(off)
    off["total_orders_7d"] = rng.integers(0, 20, n)
    off["avg_purchase_value_30d"] = np.where(rng.random(n) < 0.2, np.nan, rng.uniform(1, 100, n).round(3))
    off["last_seen_platform"] = rng.choice(PLATFORMS, n)

    # realtime windows at random 10-minute boundaries
    window_ends = T0 + pd.to_timedelta(rng.integers(6, days * 144, users * days * 3) * 10, unit="m")
    rt = pd.DataFrame({"user_id": rng.integers(0, users, len(window_ends)), "event_timestamp": window_ends})
    rt = rt.drop_duplicates(["user_id", "event_timestamp"], ignore_index=True)
    rt["created_timestamp"] = rt["event_timestamp"] + pd.Timedelta(seconds=30)
    rt_dup = rt.sample(n=max(1, len(rt) // 10), random_state=seed + 1).copy()
    rt_dup["created_timestamp"] = rt_dup["created_timestamp"] + pd.Timedelta(seconds=30)
    rt = pd.concat([rt, rt_dup], ignore_index=True)
    rt["current_page_views_10m"] = rng.integers(0, 50, len(rt))

    # impressions: random times plus planted edges
    imp_ts = list(T0 + pd.to_timedelta(rng.uniform(0, (days + 2) * 86400, impressions), unit="s").round("us"))
    imp_user = list(rng.integers(0, users, impressions))
    for _, r in off.sample(n=min(20, len(off)), random_state=seed + 2).iterrows():
        for delta in (pd.Timedelta(0), pd.Timedelta(offline_ttl), pd.Timedelta(offline_ttl) + us):
            imp_ts.append(r["event_timestamp"] + delta)
            imp_user.append(r["user_id"])
    for _, r in rt.sample(n=min(20, len(rt)), random_state=seed + 3).iterrows():
        for delta in (pd.Timedelta(0), pd.Timedelta(realtime_ttl), pd.Timedelta(realtime_ttl) + us, -us):
            imp_ts.append(r["event_timestamp"] + delta)
            imp_user.append(r["user_id"])
    imp = pd.DataFrame({"user_id": np.array(imp_user, dtype="int64"),
                        "event_timestamp": pd.to_datetime(imp_ts, utc=True).as_unit("us")})
    imp = imp[imp["event_timestamp"] >= T0 + timedelta(hours=1)]  # keep every impression inside the days
    imp["event_id"] = [f"e{i:05d}" for i in range(len(imp))]
    imp["is_clicked"] = rng.integers(0, 2, len(imp)).astype("int32")
    imp = imp.reset_index(drop=True)
    for df in (off, rt):
        for c in ("event_timestamp", "created_timestamp"):
            df[c] = pd.to_datetime(df[c], utc=True).dt.as_unit("us")
    return off, rt, imp[["event_id", "user_id", "event_timestamp", "is_clicked"]]


def brute_force_pit(imp: pd.DataFrame, feats: pd.DataFrame, columns: list[str], ttl: timedelta) -> pd.DataFrame:
    """For each impression: the feature row of its user with the largest (event_timestamp, created_timestamp)
    among those with event_timestamp <= the impression's and impression - event_timestamp <= ttl."""
    by_user = {u: g.sort_values(["event_timestamp", "created_timestamp"]) for u, g in feats.groupby("user_id")}
    out = []
    for r in imp.itertuples(index=False):
        g = by_user.get(r.user_id)
        hit = None
        if g is not None:
            ok = g[(g["event_timestamp"] <= r.event_timestamp)
                   & (r.event_timestamp - g["event_timestamp"] <= pd.Timedelta(ttl))]
            if len(ok):
                hit = ok.iloc[-1]
        out.append({"event_id": r.event_id, **{c: (None if hit is None else hit[c]) for c in columns}})
    return pd.DataFrame(out)
