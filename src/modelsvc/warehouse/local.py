"""The embedded engine: Parquet folders ``<paths.warehouse>/<table>/ds=YYYY-MM-DD/*`` queried with DuckDB.

Partitions are plain folders (every reader of the documented layout works: DuckDB or Polars globs, ``**``
included, pyarrow datasets, Spark). A write replaces each partition atomically, so that at every instant every
reader sees the complete old or the complete new partition, never neither, and no reader ever writes:

1. every new partition is written whole under the warehouse's hidden staging folder
   ``<paths.warehouse>/.staging/<table>/<run>/ds=…`` (outside the table: no glob of the table sees it);
2. each one is then swapped with the live ``ds=…`` folder by one atomic exchange of the two names (Linux
   ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np(RENAME_SWAP)``); a new day is one ``rename``;
3. the replaced folder, now in the staging folder, is kept ``warehouse.keep_replaced_s`` seconds for readers
   that listed it just before the swap, and deleted by a later write of the table, with the leftovers of
   killed runs (staged folders never swapped in are deleted at once).

A run killed at any point leaves every partition complete (old or new): nothing to repair. On a file system
without an atomic exchange (some network file systems) the swap falls back to two renames; a crash between
them leaves the day missing until the next write of the table puts it back (the only non-atomic moment, and
only there). Writers of one table take turns (an advisory lock).
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelsvc.errors import DataError, NotFoundError
from modelsvc.warehouse.base import Warehouse, check_identifier, partition_day, split_by_day, take_day

try:
    import fcntl
except ImportError:  # not POSIX: no lock, one writer per table is then up to the user
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    import pyarrow as pa

    from modelsvc.config import Settings

PART_PREFIX = "ds="
PARTITION_FILES = f"{PART_PREFIX}*/*.parquet"  # the documented layout, relative to a table folder
DATA_FILE = "part-00000.parquet"
STAGING = ".staging"  # <warehouse>/.staging/<table>/<run>/: partitions being written, and replaced ones
LOCK = ".lock"  # in <warehouse>/.staging/<table>/: held by the table's writer
SWAPPED = "swapped"  # in a run folder: the days whose swap was started (their folder there may be a replaced one)
# folders of the rename-based writer used before: <table>/.tmp-ds=… (staged), <table>/.old-ds=… (replaced)
LEGACY_TMP, LEGACY_OLD = ".tmp-", ".old-"


def partition_glob(table_folder: str | Path) -> str:
    """The glob of every data file of a local table folder: ``<table_folder>/ds=*/*.parquet``."""
    return f"{str(table_folder).rstrip('/')}/{PARTITION_FILES}"


def connect_duckdb(threads: int | None = None) -> Any:
    """A DuckDB connection set up as every modelsvc query expects: UTC session, no progress bar, ``threads``."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET enable_progress_bar = false")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


@cache
def _exchange_call() -> Callable[[bytes, bytes], int] | None:
    """The C call exchanging two paths atomically, or None where the platform has none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        renameat2 = libc.renameat2
        renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        at_fdcwd, rename_exchange = -100, 2
        return lambda a, b: int(renameat2(at_fdcwd, a, at_fdcwd, b, rename_exchange))
    if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        renamex_np = libc.renamex_np
        renamex_np.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint]
        rename_swap = 2
        return lambda a, b: int(renamex_np(a, b, rename_swap))
    return None


def exchange(a: Path, b: Path) -> bool:
    """Swap the names ``a`` and ``b`` (both exist) in one atomic step; False where the platform or the file
    system cannot (nothing was changed then)."""
    call = _exchange_call()
    if call is None:
        return False
    if call(os.fsencode(a), os.fsencode(b)) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


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

    def staging_path(self, table: str) -> Path:
        """Where writes of ``table`` stage new partitions and keep replaced ones (outside the table folder)."""
        return self.root / STAGING / check_identifier(table)

    # -- Warehouse interface -------------------------------------------------------------------------------------
    def table_exists(self, table: str) -> bool:
        return bool(self.partitions(table))

    def partitions(self, table: str) -> list[date]:
        base = self.table_path(table)
        if not base.is_dir():
            return []
        days = []
        for p in base.iterdir():
            if p.is_dir() and p.name.startswith(PART_PREFIX):
                try:
                    day = date.fromisoformat(p.name[len(PART_PREFIX):])
                except ValueError:
                    continue  # not ours: ignore folders that are not ds=YYYY-MM-DD
                if day.isoformat() == p.name[len(PART_PREFIX):]:  # not ds=20250105, a second spelling of a day
                    days.append(day)
        return sorted(days)

    def read(self, table: str, *, start: date | None = None, end: date | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        days = self._days(table, start, end)
        return self._select(table, days, self._relation(table, days), columns)

    def read_raw(self, *, start: date | None = None, end: date | None = None,
                 columns: Sequence[str] | None = None) -> pa.Table:
        table = self.settings.tables.raw_events
        days = self._days(table, start, end)
        return self._select(table, days, self.raw_relation(table, days), columns)

    def _days(self, table: str, start: date | None, end: date | None) -> list[date]:
        return [d for d in self.partitions(table) if (start is None or d >= start) and (end is None or d <= end)]

    def _select(self, table: str, days: Sequence[date], relation: str | None,
                columns: Sequence[str] | None) -> pa.Table:
        import pyarrow as pa

        cols = ", ".join(check_identifier(c, what="column") for c in columns) if columns else "*"
        if relation is None:
            if not days and not self.table_path(table).is_dir():
                raise NotFoundError(f"table '{table}' not found under {self.root}")
            return pa.table({}) if not columns else pa.table({c: pa.array([], pa.null()) for c in columns})
        # no ORDER BY: DuckDB keeps the order of the (day-sorted) files, which is stable and cheaper than a sort
        return self.connection().sql(f"SELECT {cols} FROM ({relation})").to_arrow_table()

    def write_partitions(self, table: str, data: pa.Table, *, days: Sequence[date] = (),
                         plain: Sequence[str] = ()) -> list[date]:
        """Stage every partition (in parallel: Parquet encoding releases the GIL), then swap them in one by one;
        the ``plain`` columns are encoded without a Parquet dictionary."""
        if "ds" not in data.column_names:
            raise DataError(f"cannot write table '{table}': the data has no 'ds' column")
        if data.column("ds").null_count:
            raise DataError(f"cannot write table '{table}': some rows have a null 'ds'")
        located = split_by_day(data.column("ds"))  # a date32 ds becomes 'YYYY-MM-DD'
        by_day = {partition_day(value, where=f"cannot write table '{table}'"): rows for value, rows in located.items()}
        days = sorted(set(by_day) | set(days))
        with self._writing(table):
            self._write(table, data.drop_columns(["ds"]), by_day, days, plain)
        self._views.discard(table)
        return days

    @contextmanager
    def _writing(self, table: str) -> Iterator[None]:
        """One writer per table at a time: a second one waits (an advisory lock, released by the kernel when
        its holder dies, so the holder may delete any run folder it finds)."""
        self.staging_path(table).mkdir(parents=True, exist_ok=True)
        with open(self.staging_path(table) / LOCK, "a+b") as lock:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _write(self, table: str, body: pa.Table, by_day: dict[date, Any], days: list[date],
               plain: Sequence[str] = ()) -> None:
        import pyarrow.parquet as pq

        dictionary: bool | list[str] = [c for c in body.column_names if c not in plain] if plain else True

        base = self.table_path(table)
        base.mkdir(parents=True, exist_ok=True)
        self.clean_staging(table)
        # a run folder sorts by its start time (the name says when it was written, for whoever looks)
        run = self.staging_path(table) / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        run.mkdir(parents=True)

        failed = threading.Event()  # after a failure the files not started are not written (a busy main thread
        # could otherwise cancel them only after the workers wrote them all)

        def stage(day: date) -> None:
            if failed.is_set():
                return
            try:
                part = take_day(body, by_day[day]) if day in by_day else body.slice(0, 0)  # empty: empty partition
                folder = run / f"{PART_PREFIX}{day.isoformat()}"
                folder.mkdir()
                pq.write_table(part, folder / DATA_FILE, row_group_size=1_000_000, use_dictionary=dictionary)
            except BaseException:
                failed.set()
                raise

        workers = max(1, min(len(days), self.settings.warehouse.threads or os.cpu_count() or 1))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modelsvc-write")
        try:  # nothing is swapped until every partition is written
            for future in [pool.submit(stage, day) for day in days]:
                future.result()
        except BaseException:  # a failed write or Ctrl-C: the files not started are never written
            failed.set()
            pool.shutdown(wait=True, cancel_futures=True)
            shutil.rmtree(run, ignore_errors=True)
            raise
        pool.shutdown()
        replaced = False
        with open(run / SWAPPED, "a", encoding="utf-8") as journal:
            for day in days:
                # recorded before the swap: a later run keeps this day's folder here for readers, as a replaced one
                journal.write(f"{day.isoformat()}\n")
                journal.flush()
                replaced |= self._swap(run, base, f"{PART_PREFIX}{day.isoformat()}")
        os.utime(run / SWAPPED)  # the replaced folders are kept keep_replaced_s from now
        if not replaced or not self.settings.warehouse.keep_replaced_s:
            shutil.rmtree(run, ignore_errors=True)

    @staticmethod
    def _swap(run: Path, base: Path, name: str) -> bool:
        """Swap the staged ``run/name`` in as ``base/name``; the replaced folder ends up as ``run/name``. Returns
        whether a partition was replaced."""
        staged, live = run / name, base / name
        if not live.exists():
            os.rename(staged, live)  # a new day: one rename
            return False
        if not exchange(staged, live):  # no atomic exchange here: two renames, the day missing in between
            os.rename(live, run / f"{LEGACY_OLD}{name}")
            os.rename(staged, live)
        return True

    def clean_staging(self, table: str) -> None:
        """Delete what earlier writes of ``table`` left: staged folders never swapped in (at once), replaced
        folders (``warehouse.keep_replaced_s`` after their run), and the rename-based writer's leftovers. A day
        left missing by a crash of the two-rename fallback is put back first. Called by every write."""
        base = self.table_path(table)
        for legacy in base.glob(f"{LEGACY_OLD}{PART_PREFIX}*") if base.is_dir() else ():
            live = base / legacy.name[len(LEGACY_OLD):].rsplit("-", 1)[0]  # .old-ds=YYYY-MM-DD-<token>
            if live.exists():
                shutil.rmtree(legacy, ignore_errors=True)
            else:
                os.rename(legacy, live)
        for legacy in base.glob(f"{LEGACY_TMP}{PART_PREFIX}*") if base.is_dir() else ():
            shutil.rmtree(legacy, ignore_errors=True)
        staging = self.staging_path(table)
        if not staging.is_dir():
            return
        now = time.time()
        for run in staging.iterdir():
            if run.name.startswith("."):
                continue  # the lock
            journal = run / SWAPPED
            swapped = set(journal.read_text(encoding="utf-8").split()) if journal.is_file() else set()
            for day in swapped:  # the fallback killed between its two renames: put the whole new folder in
                live, replaced = base / f"{PART_PREFIX}{day}", run / f"{LEGACY_OLD}{PART_PREFIX}{day}"
                if replaced.is_dir() and not live.exists():
                    staged = run / f"{PART_PREFIX}{day}"
                    os.rename(staged if staged.is_dir() else replaced, live)
            if not swapped or now - journal.stat().st_mtime >= self.settings.warehouse.keep_replaced_s:
                shutil.rmtree(run, ignore_errors=True)
                continue
            for entry in run.iterdir():  # staged but never swapped in: no reader has seen it
                name = entry.name.removeprefix(LEGACY_OLD)
                if entry.is_dir() and name.removeprefix(PART_PREFIX) not in swapped:
                    shutil.rmtree(entry, ignore_errors=True)

    # -- SQL -----------------------------------------------------------------------------------------------------
    def connection(self) -> Any:
        if self._con is None:
            from modelsvc import interrupts

            self._con = connect_duckdb(self.settings.warehouse.threads)
            interrupts.on_signal(self._con.interrupt)  # [ops] Ctrl-C / SIGTERM stop a long query at once
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

        files = {day: self.files(table, day) for day in days}
        # every file of every day at once: the data check reads them all in one query
        checked = {c.path: c for c in check_parquet_files([f for fs in files.values() for f in fs],
                                                          connection=self.connection())}
        counts = {day: sum(checked[f].rows for f in fs) for day, fs in files.items()}
        groups: dict[tuple, list[Path]] = {}
        for c in checked.values():
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
                if name in self._views or name.startswith(".") or not folder.is_dir() or name not in sql:
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
