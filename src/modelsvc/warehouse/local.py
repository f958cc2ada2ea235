"""The embedded engine: Parquet folders ``<paths.warehouse>/<table>/ds=YYYY-MM-DD/*`` queried with DuckDB.

Writes replace each partition atomically: the new partition is written to a hidden temporary folder beside the
old one, then swapped in by renames (old → ``.old-…``, new → ``ds=…``), then the old one is deleted. Readers never
see a half partition; a run interrupted while writing leaves the previous partition in place, and a run
interrupted between the two renames is repaired by the next call on that table (the ``.old-…`` folder is
renamed back). One writer per table at a time.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsvc.errors import DataError, NotFoundError
from modelsvc.warehouse.base import Warehouse, check_identifier, partition_day, split_by_day, take_day

if TYPE_CHECKING:
    import pyarrow as pa

    from modelsvc.config import Settings

PART_PREFIX = "ds="
TMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
DATA_FILE = "part-00000.parquet"


def _is_data_file(p: Path) -> bool:
    # Hive/Spark leave _SUCCESS, _metadata and .crc files beside the data; users may name files as they like
    return p.is_file() and not p.name.startswith((".", "_"))


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


class LocalWarehouse(Warehouse):
    """Hive-style partitioned Parquet on the local disk, DuckDB for SQL."""

    engine = "duckdb"
    dialect = "duckdb"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.root = settings.paths.resolve("warehouse")
        self._con: Any = None
        self._views: set[str] = set()

    # -- layout ------------------------------------------------------------------------------------------------
    def table_path(self, table: str) -> Path:
        return self.root / check_identifier(table)

    def partition_path(self, table: str, day: date) -> Path:
        return self.table_path(table) / f"{PART_PREFIX}{day.isoformat()}"

    def files(self, table: str, day: date) -> list[Path]:
        """The data files of one partition, sorted ([] when the partition is missing)."""
        folder = self.partition_path(table, day)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if _is_data_file(p))

    def _recover(self, table: str) -> None:
        """Put back a partition whose swap was interrupted between its two renames."""
        base = self.table_path(table)
        if not base.is_dir():
            return
        for old in base.glob(f"{OLD_PREFIX}{PART_PREFIX}*"):
            name = old.name[len(OLD_PREFIX):].rsplit("-", 1)[0]
            target = base / name
            if target.exists():
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(old, target)

    # -- Warehouse interface -------------------------------------------------------------------------------------
    def table_exists(self, table: str) -> bool:
        return bool(self.partitions(table))

    def partitions(self, table: str) -> list[date]:
        base = self.table_path(table)
        if not base.is_dir():
            return []
        self._recover(table)
        days = []
        for p in base.iterdir():
            if p.is_dir() and p.name.startswith(PART_PREFIX):
                try:
                    days.append(date.fromisoformat(p.name[len(PART_PREFIX):]))
                except ValueError:
                    continue  # not ours: ignore folders that are not ds=YYYY-MM-DD
        return sorted(days)

    def read(self, table: str, *, start: date | None = None, end: date | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        import pyarrow as pa

        days = [d for d in self.partitions(table) if (start is None or d >= start) and (end is None or d <= end)]
        if table == self.settings.tables.raw_events:
            relation = self.raw_relation(table, days)
        else:
            relation = self._relation(table, days)
        cols = ", ".join(check_identifier(c, what="column") for c in columns) if columns else "*"
        if relation is None:
            if not days and not self.table_path(table).is_dir():
                raise NotFoundError(f"table '{table}' not found under {self.root}")
            return pa.table({}) if not columns else pa.table({c: pa.array([], pa.null()) for c in columns})
        # no ORDER BY: DuckDB keeps the order of the (day-sorted) files, which is stable and cheaper than a sort
        return self.connection().sql(f"SELECT {cols} FROM ({relation})").to_arrow_table()

    def write_partitions(self, table: str, data: pa.Table, *, days: Sequence[date] = ()) -> list[date]:
        """Stage every partition (in parallel: Parquet encoding releases the GIL), then swap them in one by one."""
        import pyarrow.parquet as pq

        if "ds" not in data.column_names:
            raise DataError(f"cannot write table '{table}': the data has no 'ds' column")
        if data.column("ds").null_count:
            raise DataError(f"cannot write table '{table}': some rows have a null 'ds'")
        located = split_by_day(data.column("ds"))  # a date32 ds becomes 'YYYY-MM-DD'
        by_day = {partition_day(value, where=f"cannot write table '{table}'"): rows for value, rows in located.items()}
        days = sorted(set(by_day) | set(days))
        base = self.table_path(table)
        base.mkdir(parents=True, exist_ok=True)
        self._recover(table)
        body = data.drop_columns(["ds"])
        token = uuid.uuid4().hex[:8]
        staged = [(base / f"{TMP_PREFIX}{PART_PREFIX}{day.isoformat()}-{token}", self.partition_path(table, day))
                  for day in days]

        def stage(day: date, tmp: Path) -> None:
            part = take_day(body, by_day[day]) if day in by_day else body.slice(0, 0)  # empty: an empty partition
            tmp.mkdir()
            pq.write_table(part, tmp / DATA_FILE, row_group_size=1_000_000)

        workers = max(1, min(len(days), self.settings.warehouse.threads or os.cpu_count() or 1))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelsvc-write")
        try:  # nothing is swapped until every partition is written
            for future in [pool.submit(stage, day, tmp) for day, (tmp, _) in zip(days, staged, strict=True)]:
                future.result()
        except BaseException:  # a failed write or Ctrl-C: the files not started are never written
            pool.shutdown(wait=True, cancel_futures=True)
            for tmp, _ in staged:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        pool.shutdown()
        for tmp, final in staged:
            self._swap(tmp, final, token)
        self._views.discard(table)
        return days

    @staticmethod
    def _swap(tmp: Path, final: Path, token: str) -> None:
        old = final.parent / f"{OLD_PREFIX}{final.name}-{token}"
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)

    # -- SQL -----------------------------------------------------------------------------------------------------
    def connection(self) -> Any:
        if self._con is None:
            import duckdb

            from modelsvc import interrupts

            con = duckdb.connect()
            interrupts.on_signal(con.interrupt)  # [ops] Ctrl-C / SIGTERM stop a long query at once
            con.execute("SET TimeZone = 'UTC'")
            con.execute("SET enable_progress_bar = false")
            if self.settings.warehouse.threads:
                con.execute(f"SET threads = {int(self.settings.warehouse.threads)}")
            self._con = con
        return self._con

    def _relation(self, table: str, days: Sequence[date]) -> str | None:
        files = [f for d in days for f in self.files(table, d)]
        if not files:
            return None
        listing = ", ".join(_sql_str(str(f)) for f in files)
        return (f"SELECT * FROM read_parquet([{listing}], hive_partitioning = true, union_by_name = true, "
                "hive_types = {'ds': VARCHAR})")

    def raw_relation(self, table: str, days: Sequence[date]) -> str | None:
        """A SELECT over the raw-event files of ``days`` in the canonical schema, after the contract check of
        every file (footers; string timestamps are parsed). None when the files hold no rows."""
        return self._raw_relation(table, days)[0]

    def _raw_relation(self, table: str, days: Sequence[date]) -> tuple[str | None, dict[date, int]]:
        from modelsvc.contract import check_parquet_files, select_sql

        counts: dict[date, int] = {}
        groups: dict[tuple, list[Path]] = {}
        for day in days:
            checked = check_parquet_files(self.files(table, day), connection=self.connection())
            counts[day] = sum(c.rows for c in checked)
            for c in checked:
                if c.rows:  # an empty file may carry placeholder types (e.g. all-null columns): skip it
                    groups.setdefault(c.plan, []).append(c.path)
        parts = []
        for plan, group in groups.items():
            listing = ", ".join(_sql_str(str(f)) for f in group)
            source = f"read_parquet([{listing}], hive_partitioning = true, hive_types = {{'ds': VARCHAR}})"
            parts.append(select_sql(plan, source))
        return (" UNION ALL ".join(parts) if parts else None), counts

    def check_raw(self, table: str, *, start: date, end: date) -> dict[date, int]:
        """Check the raw-event contract of the partitions in [start, end] and expose them to :meth:`query` as a
        view named ``table``. Returns the row count of each partition found (from the Parquet footers)."""
        from modelsvc.contract import RAW_COLUMNS

        days = [d for d in self.partitions(table) if start <= d <= end]
        relation, counts = self._raw_relation(table, days)
        if relation is None:
            cols = ", ".join(f"CAST(NULL AS {typ}) AS {name}" for name, (typ, _) in RAW_COLUMNS.items())
            relation = f"SELECT {cols}, CAST(NULL AS VARCHAR) AS ds WHERE false"
        self.connection().execute(f"CREATE OR REPLACE TEMP VIEW {check_identifier(table)} AS {relation}")
        self._views.add(table)
        return counts

    def query(self, sql: str) -> pa.Table:
        """Run one SELECT; tables not prepared by :meth:`check_raw` are read from their Parquet folders."""
        con = self.connection()
        if self.root.is_dir():
            for folder in self.root.iterdir():
                name = folder.name
                if name in self._views or not folder.is_dir() or name not in sql:
                    continue
                relation = self._relation(name, self.partitions(name))
                if relation is not None:
                    con.execute(f"CREATE OR REPLACE TEMP VIEW {check_identifier(name)} AS {relation}")
        return con.sql(sql).to_arrow_table()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None
            self._views.clear()
