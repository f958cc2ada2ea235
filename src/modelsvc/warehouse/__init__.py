"""The SQL engines behind one interface: DuckDB over local Parquet (embedded default) and Hive (HiveServer2)."""

from __future__ import annotations

from modelsvc.config import Settings
from modelsvc.warehouse.base import Warehouse


def open_warehouse(settings: Settings) -> Warehouse:
    """The warehouse for ``settings.warehouse.engine`` (imports the engine's driver lazily)."""
    if settings.warehouse.engine == "hive":
        from modelsvc.warehouse.hive import HiveWarehouse

        return HiveWarehouse(settings)
    from modelsvc.warehouse.local import LocalWarehouse

    return LocalWarehouse(settings)


# -- readiness checks (modelsvc doctor) ------------------------------------------------------------------------

ENGINE_FIX = {
    "duckdb": "create the warehouse (demo: modelsvc demo-data) or point paths.warehouse at it",
    "hive": "check hive.host/hive.port and that HiveServer2 (or the Spark Thrift server) is running",
}


def check_engine(settings: Settings, timeout: float) -> str:
    """The engine answers: HiveServer2 accepts a session and lists tables; the local warehouse folder exists."""
    from modelsvc.health import CheckOutcome, tcp

    if settings.warehouse.engine == "hive":
        hive = settings.hive
        tcp(hive.host, hive.port, timeout, "HiveServer2")
        with open_warehouse(settings) as wh:
            wh.table_exists(settings.tables.raw_events)  # connects and lists tables
        return f"hive {hive.host}:{hive.port}/{hive.database}: connected"
    folder = settings.paths.resolve("warehouse")
    if not folder.is_dir():
        raise CheckOutcome("fail", f"warehouse folder {folder} does not exist")
    return f"duckdb over {folder}"


def check_raw_events(settings: Settings, timeout: float) -> str:
    """The raw-events table has partitions."""
    from modelsvc.health import CheckOutcome

    table = settings.tables.raw_events
    days = _partitions(settings, table)
    if not days:
        raise CheckOutcome("fail", f"table '{table}' has no partitions")
    return _describe(table, days)


def check_feature_tables(settings: Settings, timeout: float) -> str:
    """The feature tables have partitions (a warning when not: the pipeline creates them)."""
    from modelsvc.health import CheckOutcome

    tables = [settings.tables.user_features, settings.tables.realtime_features]
    found = {t: _partitions(settings, t) for t in tables}
    text = "; ".join(_describe(t, d) for t, d in found.items())
    if not all(found.values()):
        raise CheckOutcome("warn", text)
    return text


def _partitions(settings: Settings, table: str) -> list[str]:
    """``ds`` partitions of ``table``: through the engine, or for the local engine straight from the folders
    (no DuckDB needed to list them)."""
    if settings.warehouse.engine == "duckdb":
        folder = settings.paths.resolve("warehouse") / table
        return sorted(p.name[3:] for p in folder.glob("ds=*") if p.is_dir() and any(p.glob("*.parquet")))
    with open_warehouse(settings) as wh:
        return [d.isoformat() for d in wh.partitions(table)]


def _describe(table: str, days: list[str]) -> str:
    return f"{table}: {len(days)} partitions ({days[0]}..{days[-1]})" if days else f"{table}: no partitions"


__all__ = ["ENGINE_FIX", "Warehouse", "check_engine", "check_feature_tables", "check_raw_events", "open_warehouse"]
