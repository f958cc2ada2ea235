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


__all__ = ["Warehouse", "open_warehouse"]
