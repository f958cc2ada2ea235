"""The Hive engine: tables on a HiveServer2 endpoint (Hive, or Spark's Thrift server), reached through pyhive.

The computation happens in the cluster: feature tables are filled by the server, a chunk of days per statement
(a staged ``CREATE TABLE … AS SELECT`` then a dynamic-partition ``INSERT OVERWRITE TABLE … PARTITION (ds)``), or
one ``INSERT OVERWRITE TABLE … PARTITION (ds='…') SELECT …`` per day; the client only sends SQL and reads results.

Safety: every table name is checked with :func:`check_identifier` and every day with strict date parsing before
a statement is built, so a hostile name is refused before anything is sent. Values are rendered as typed
literals by :func:`sql_literal` (strings escaped the way HiveQL reads them), never pasted in raw.

Uploads (``write_partitions``, used by demo-data for raw events, and the Feast entity dataframe) go through SQL
only, so they work against a remote server: rows are sent as JSON lines inside one string literal per statement
(≤ 1 MB), split and cast by the server into a staging table (about 15k rows/s on the test server), then one
multi-insert ``FROM staging INSERT OVERWRITE … PARTITION (ds='d1') … INSERT OVERWRITE … PARTITION (ds='d2') …``
replaces every day present (each partition whole), and the staging table is dropped.

Timestamps: HiveQL timestamps carry no zone. modelsvc writes and reads them as UTC wall-clock values, so the
server must run with a UTC session time zone (Spark: ``spark.sql.session.timeZone=UTC``).
"""

from __future__ import annotations

import json
import math
import re
import socket
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from modelsvc.errors import (
    ConfigError,
    DataError,
    ModelsvcError,
    NotFoundError,
    RetryableError,
    ServiceUnavailableError,
    require,
)
from modelsvc.timeutil import parse_date
from modelsvc.warehouse.base import Warehouse, check_identifier, partition_day

if TYPE_CHECKING:
    import pyarrow as pa

    from modelsvc.config import HiveSettings, Settings
    from modelsvc.etl import FeatureSql
    from modelsvc.progress import Task

PARTITION_COLUMN = "ds"
# One upload statement carries at most this many characters of SQL (HiveServer2 and Spark parse the
# whole statement in memory; 1 MB keeps each statement under a second or two).
MAX_STATEMENT_CHARS = 1_000_000
FETCH_SIZE = 10_000


class HiveQueryError(ModelsvcError):
    """HiveServer2 refused or failed a statement (the message carries the server's first line)."""

    exit_code = 70


# -- connection ------------------------------------------------------------------------------------------------

def endpoint(hive: HiveSettings) -> str:
    return f"{hive.host}:{hive.port}"


def connect(hive: HiveSettings) -> Any:
    """Open a pyhive connection for ``hive`` (settings.hive) with the configured timeouts.

    Raises ServiceUnavailableError naming host:port (never the password) when the server cannot be reached.
    """
    require("pyhive", "hive")
    from pyhive import hive as pyhive_hive
    from thrift.transport import TSocket, TTransport

    sock = TSocket.TSocket(hive.host, hive.port)
    sock.setTimeout(hive.connect_timeout_s * 1000)
    password = hive.password.get_secret_value() if hive.password is not None else None
    username = hive.username or "modelsvc"
    if hive.auth == "NOSASL":
        transport: Any = TTransport.TBufferedTransport(sock)
    else:
        require("thrift_sasl", "hive")
        import thrift_sasl

        sasl_mech = "GSSAPI" if hive.auth == "KERBEROS" else "PLAIN"
        # in NONE mode the server ignores the password, but SASL PLAIN needs a non-empty one
        sasl_password = password if hive.auth in ("LDAP", "CUSTOM") else "x"
        if hive.auth in ("LDAP", "CUSTOM") and not password:
            raise ConfigError(f"hive.auth is {hive.auth} but hive.password is not set (set MODELSVC_HIVE__PASSWORD)")

        def sasl_factory() -> Any:
            return pyhive_hive.get_installed_sasl(host=hive.host, sasl_auth=sasl_mech,
                                                  service=hive.kerberos_service_name, username=username,
                                                  password=sasl_password)

        transport = thrift_sasl.TSaslClientTransport(sasl_factory, sasl_mech, sock)
    try:
        conn = pyhive_hive.Connection(thrift_transport=transport, username=username, database=hive.database)
    except Exception as exc:  # thrift, socket and SASL errors all mean "cannot talk to the server"
        with suppress(Exception):
            transport.close()
        reason = _reason(exc)
        if password:  # belt and braces: a server or SASL message never echoes the secret back to the user
            reason = reason.replace(password, "**********")
        raise ServiceUnavailableError(
            f"cannot reach HiveServer2 at {endpoint(hive)}: {reason}",
            hint="check hive.host/hive.port (MODELSVC_HIVE__HOST, MODELSVC_HIVE__PORT) and that the server is up",
        ) from None
    # queries may run long: from now on the socket waits up to the query timeout for an answer
    sock.setTimeout(hive.query_timeout_s * 1000)
    return conn


def _reason(exc: BaseException) -> str:
    """A short, secret-free reason for a connection failure."""
    inner = getattr(exc, "inner", None) or exc.__cause__ or exc.__context__
    for e in (inner, exc):
        if isinstance(e, (socket.timeout, TimeoutError)):
            return "timed out"
        if isinstance(e, ConnectionRefusedError):
            return "connection refused"
        if isinstance(e, socket.gaierror):
            return "unknown host"
    status = exc.args[0] if exc.args else None
    msg = getattr(getattr(status, "status", None), "errorMessage", None)
    text = msg or str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def server_error(exc: BaseException) -> tuple[str, str]:
    """(sqlState, first line of the message) of a pyhive OperationalError."""
    arg = exc.args[0] if exc.args else None
    status = getattr(arg, "status", None)
    if status is not None:
        message = status.errorMessage or ""
        state = status.sqlState or ""
    else:
        message, state = str(exc), ""
    message = message.replace("Error running query: ", "").strip()
    first = message.splitlines()[0] if message else type(exc).__name__
    return state, first[:300]


def _is_missing_table(state: str, message: str) -> bool:
    return state == "42P01" or bool(re.search(r"TABLE_OR_VIEW_NOT_FOUND|Table not found|NoSuchTable|"
                                              r"SCHEMA_NOT_FOUND|Database .* not found", message))


# -- literals and types ----------------------------------------------------------------------------------------

_ARROW_TO_HIVE = {
    "int8": "TINYINT", "int16": "SMALLINT", "int32": "INT", "int64": "BIGINT",
    "uint8": "SMALLINT", "uint16": "INT", "uint32": "BIGINT",
    "float": "FLOAT", "double": "DOUBLE", "bool": "BOOLEAN",
    "string": "STRING", "large_string": "STRING", "date32[day]": "DATE",
}

_HIVE_TO_ARROW_NAMES = {
    "TINYINT_TYPE": "int8", "SMALLINT_TYPE": "int16", "INT_TYPE": "int32", "BIGINT_TYPE": "int64",
    "FLOAT_TYPE": "float32", "DOUBLE_TYPE": "float64", "DECIMAL_TYPE": "float64", "BOOLEAN_TYPE": "bool",
    "STRING_TYPE": "string", "VARCHAR_TYPE": "string", "CHAR_TYPE": "string", "DATE_TYPE": "date32",
    "TIMESTAMP_TYPE": "timestamp",
}


def hive_type(arrow_type: pa.DataType) -> str:
    """The HiveQL column type for an arrow type (timestamps of any unit or zone → TIMESTAMP)."""
    import pyarrow as pa

    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP"
    if pa.types.is_dictionary(arrow_type):
        return hive_type(arrow_type.value_type)
    name = str(arrow_type)
    if name not in _ARROW_TO_HIVE:
        raise DataError(f"column type {name} cannot be stored in Hive (supported: {', '.join(_ARROW_TO_HIVE)}, "
                        "timestamp)")
    return _ARROW_TO_HIVE[name]


def arrow_type(description_type: str) -> pa.DataType:
    """The arrow type for a pyhive cursor.description type name (``BIGINT_TYPE`` …); unknown types → string."""
    import pyarrow as pa

    name = _HIVE_TO_ARROW_NAMES.get(description_type, "string")
    if name == "timestamp":
        return pa.timestamp("us", tz="UTC")
    return {"date32": pa.date32()}.get(name) or pa.type_for_alias(name)


def _utc_naive(value: datetime) -> datetime:
    if value.tzinfo is not None:
        value = value.astimezone(timezone.utc).replace(tzinfo=None)
    return value


def sql_literal(value: Any, column_type: str | None = None) -> str:
    """Render ``value`` as a HiveQL literal; ``column_type`` (a Hive type) types a NULL and coerces numbers.

    Strings escape backslash and quote (HiveQL unescapes ``\\\\`` and ``\\'`` inside quotes); timestamps are
    rendered in UTC; NaN and infinities go through CAST. Anything else is a DataError.
    """
    import numpy as np

    if value is None:
        return f"CAST(NULL AS {column_type})" if column_type else "NULL"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value) if column_type in (None, "BIGINT", "INT", "SMALLINT", "TINYINT") else (
            f"CAST({value} AS {column_type})")
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"CAST('{'NaN' if math.isnan(value) else ('Infinity' if value > 0 else '-Infinity')}' AS DOUBLE)"
        return f"CAST({value!r} AS {column_type or 'DOUBLE'})"
    if isinstance(value, datetime):
        return "TIMESTAMP '" + _utc_naive(value).strftime("%Y-%m-%d %H:%M:%S.%f") + "'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    raise DataError(f"value of type {type(value).__name__} cannot be sent to Hive as a literal")


def day_literal(day: str | date) -> str:
    """A ``ds`` value as a quoted literal, after strict YYYY-MM-DD parsing (a UsageError otherwise)."""
    return "'" + parse_date(day, option="ds").isoformat() + "'"


def _check_raw_columns(table: str, columns: Sequence[tuple[str, str]]) -> None:
    """The raw-event contract (modelsvc.contract) on a Hive table's (name, type) columns. Timestamps must be
    TIMESTAMP here: the server does not parse strings the way the local engine does."""
    import pyarrow as pa

    from modelsvc.contract import check_schema

    fields, spelled = [], {}
    for name, typ in columns:
        base = typ.split("(")[0].split("<")[0].strip().upper()
        # a type the contract has no Arrow twin for (ARRAY, MAP, BINARY…) is read as binary: refused
        arrow = arrow_type(f"{base}_TYPE") if f"{base}_TYPE" in _HIVE_TO_ARROW_NAMES else pa.binary()
        fields.append(pa.field(name.lower(), arrow))
        spelled[f"column '{name.lower()}' has type {arrow}"] = f"column '{name.lower()}' has type {typ.upper()}"
    try:
        plans = check_schema(pa.schema(fields), where=f"table {table}")
    except DataError as exc:  # name the Hive type, not its Arrow twin
        message = exc.message
        for arrow_spelling, hive_spelling in spelled.items():
            message = message.replace(arrow_spelling, hive_spelling)
        raise DataError(message) from None
    if any(p.name == "event_timestamp" and p.kind == "parse" for p in plans):
        raise DataError(f"table {table}: column 'event_timestamp' is a string (expected TIMESTAMP on Hive)")


# -- the warehouse ---------------------------------------------------------------------------------------------

class HiveWarehouse(Warehouse):
    """Tables in ``settings.hive.database`` on a HiveServer2 endpoint, partitioned by ``ds``, stored as Parquet.

    ``hive`` replaces ``settings.hive`` (the Feast store passes its own, and no settings);
    ``connection_factory`` (tests) replaces :func:`connect`; it is called with those HiveSettings.
    """

    engine = "hive"
    dialect = "hive"  # modelsvc.etl.DIALECTS

    def __init__(self, settings: Settings | None, *, hive: HiveSettings | None = None,
                 connection_factory: Callable[[HiveSettings], Any] | None = None) -> None:
        super().__init__(settings)  # type: ignore[arg-type]  # None: a bare client (the Feast store)
        if hive is None:
            if settings is None:
                raise TypeError("HiveWarehouse needs settings or hive")
            hive = settings.hive
        self.hive = hive
        self.database = check_identifier(self.hive.database, what="hive.database")
        self.scratch_database = check_identifier(self.hive.scratch_database or self.hive.database,
                                                 what="hive.scratch_database")
        self._factory = connection_factory or connect
        self._conn: Any = None
        self._known_columns: dict[str, list[tuple[str, str]]] = {}  # tables created or described by this instance
        self._dynamic: bool | None = None  # dynamic-partition inserts: allowed in this session? (None: not set up)

    # -- plumbing --------------------------------------------------------------------------------------------
    @property
    def connection(self) -> Any:
        if self._conn is None:
            self._conn = self._factory(self.hive)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None
        if self._dynamic:
            self._dynamic = None  # session settings go with the connection: set again on the next one

    def __enter__(self) -> HiveWarehouse:
        return self

    def qualified(self, table: str, *, scratch: bool = False) -> str:
        """```db`.`table``` after checking the name (raises UsageError before any query)."""
        check_identifier(table)
        return f"`{self.scratch_database if scratch else self.database}`.`{table}`"

    @contextmanager
    def _cursor(self, sql: str, table: str | None = None) -> Iterator[Any]:
        from pyhive import exc as pyhive_exc
        from thrift.transport.TTransport import TTransportException

        cur = self.connection.cursor()
        try:
            try:
                cur.execute(sql)
            except pyhive_exc.OperationalError as exc:
                state, message = server_error(exc)
                if _is_missing_table(state, message):
                    raise NotFoundError(
                        f"table {self.database}.{table} does not exist on HiveServer2 at {endpoint(self.hive)}"
                        if table is not None else f"HiveServer2 at {endpoint(self.hive)}: {message}") from None
                raise HiveQueryError(f"HiveServer2 at {endpoint(self.hive)} failed a statement: {message}") from None
            except (TTransportException, OSError, EOFError) as exc:
                self.close()
                timed_out = getattr(exc, "type", None) == TTransportException.TIMED_OUT
                if timed_out or isinstance(exc, (socket.timeout, TimeoutError)):
                    raise RetryableError(
                        f"HiveServer2 at {endpoint(self.hive)} did not answer within "
                        f"hive.query_timeout_s={self.hive.query_timeout_s:g}s") from None
                raise ServiceUnavailableError(
                    f"lost the connection to HiveServer2 at {endpoint(self.hive)}: {_reason(exc)}") from None
            yield cur
        finally:
            with suppress(Exception):
                cur.close()

    def execute(self, sql: str, *, table: str | None = None) -> None:
        """Run one statement that returns no rows (DDL, INSERT). ``table`` names the culprit if it is missing."""
        with self._cursor(sql, table):
            pass

    def query(self, sql: str, *, table: str | None = None) -> pa.Table:
        """Run one SELECT and return its rows as an arrow table (timestamps as UTC)."""
        import pyarrow as pa

        with self._cursor(sql, table) as cur:
            desc = cur.description or []
            names = [_column_name(d[0]) for d in desc]
            types = [arrow_type(d[1]) for d in desc]
            columns: list[list[Any]] = [[] for _ in desc]
            while True:
                rows = cur.fetchmany(FETCH_SIZE)
                if not rows:
                    break
                for row in rows:
                    for i, v in enumerate(row):
                        columns[i].append(v)
        arrays = []
        for values, typ in zip(columns, types, strict=True):
            if pa.types.is_timestamp(typ):
                values = [None if v is None else _as_utc(v) for v in values]
            arrays.append(pa.array(values, type=typ))
        return pa.Table.from_arrays(arrays, schema=pa.schema(list(zip(names, types, strict=True))))

    def scalar_rows(self, sql: str, *, table: str | None = None) -> list[tuple[Any, ...]]:
        with self._cursor(sql, table) as cur:
            return [tuple(r) for r in cur.fetchall()]

    # -- the Warehouse interface -----------------------------------------------------------------------------
    def table_exists(self, table: str, *, scratch: bool = False) -> bool:
        check_identifier(table)
        db = self.scratch_database if scratch else self.database
        rows = self.scalar_rows(f"SHOW TABLES IN `{db}` LIKE '{table}'")
        # (database, tableName, isTemporary) on Spark, (tab_name) on Hive
        return any(table.lower() in (str(c).lower() for c in row) for row in rows)

    def partitions(self, table: str) -> list[date]:
        qualified = self.qualified(table)
        if not self.table_exists(table):
            return []
        days = []
        for (spec,) in self.scalar_rows(f"SHOW PARTITIONS {qualified}", table=table):
            for part in str(spec).split("/"):
                key, _, value = part.partition("=")
                if key == PARTITION_COLUMN:
                    days.append(date.fromisoformat(value))
        return sorted(days)

    def columns(self, table: str, *, scratch: bool = False) -> list[tuple[str, str]]:
        """(name, hive type) of ``table``'s data columns, in table order (``ds`` excluded)."""
        qualified = self.qualified(table, scratch=scratch)
        if not scratch and table in self._known_columns:
            return list(self._known_columns[table])
        out: list[tuple[str, str]] = []
        for row in self.scalar_rows(f"DESCRIBE {qualified}", table=table):
            name = (row[0] or "").strip()
            if not name or name.startswith("#"):
                break  # the "# Partition Information" section repeats the partition columns
            if name != PARTITION_COLUMN:
                out.append((name, str(row[1]).strip().upper()))
        if not scratch:
            self._known_columns[table] = out
        return list(out)

    def read(self, table: str, *, start: date | None = None, end: date | None = None,
             columns: Sequence[str] | None = None) -> pa.Table:
        qualified = self.qualified(table)
        select = "*"
        if columns is not None:
            cols = [check_identifier(c, what="column name") for c in columns if c != PARTITION_COLUMN]
            select = ", ".join(f"`{c}`" for c in [*cols, PARTITION_COLUMN])
        where = []
        if start is not None:
            where.append(f"`{PARTITION_COLUMN}` >= {day_literal(start)}")
        if end is not None:
            where.append(f"`{PARTITION_COLUMN}` <= {day_literal(end)}")
        sql = f"SELECT {select} FROM {qualified}" + (" WHERE " + " AND ".join(where) if where else "")
        return self.query(sql, table=table)

    def ensure_table(self, table: str, schema: pa.Schema, *, scratch: bool = False,
                     partitioned: bool = True) -> None:
        """CREATE TABLE IF NOT EXISTS, Parquet, partitioned by ``ds`` (the schema's own ``ds`` is the key)."""
        qualified = self.qualified(table, scratch=scratch)
        cols = []
        for field in schema:
            if partitioned and field.name == PARTITION_COLUMN:
                continue
            cols.append(f"`{check_identifier(field.name, what='column name')}` {hive_type(field.type)}")
        part = f" PARTITIONED BY (`{PARTITION_COLUMN}` STRING)" if partitioned else ""
        self.execute(f"CREATE TABLE IF NOT EXISTS {qualified} ({', '.join(cols)}){part} STORED AS PARQUET")

    def drop_table(self, table: str, *, scratch: bool = False) -> None:
        self.execute(f"DROP TABLE IF EXISTS {self.qualified(table, scratch=scratch)}")
        if not scratch:
            self._known_columns.pop(table, None)

    def insert_rows(self, table: str, data: pa.Table, *, scratch: bool = False) -> int:
        """Append ``data`` to an existing table; returns the statements sent.

        Rows travel as JSON lines inside one string literal per statement, split and typed by the server
        (``explode(split(…))`` + ``json_tuple`` + ``CAST``): one literal parses far faster than thousands of
        ``VALUES`` tuples, and it is plain SQL, so it works against a remote server.
        """
        qualified = self.qualified(table, scratch=scratch)
        types = [hive_type(f.type) for f in data.schema]
        cols = ", ".join(f"`{check_identifier(n, what='column name')}`" for n in data.column_names)
        keys = [f"c{i}" for i in range(len(types))]
        select = ", ".join(f"j.{k}" if t == "STRING" else f"CAST(j.{k} AS {t})" for k, t in zip(keys, types,
                                                                                               strict=True))
        tuple_keys = ", ".join(f"'{k}'" for k in keys)
        head = f"INSERT INTO TABLE {qualified} ({cols}) SELECT {select} FROM (SELECT explode(split("
        tail = f", '\\n')) AS line) t LATERAL VIEW json_tuple(t.line, {tuple_keys}) j AS {', '.join(keys)}"
        sent = 0
        batch: list[str] = []
        size = len(head) + len(tail)
        for row in _rows(data):
            line = json.dumps({k: _json_value(v) for k, v in zip(keys, row, strict=True)}, ensure_ascii=False,
                              separators=(",", ":"))
            if batch and size + len(line) * 1.1 + 1 > MAX_STATEMENT_CHARS:
                self.execute(head + sql_literal("\n".join(batch)) + tail)
                sent += 1
                batch, size = [], len(head) + len(tail)
            batch.append(line)
            size += int(len(line) * 1.1) + 1
        if batch:
            self.execute(head + sql_literal("\n".join(batch)) + tail)
            sent += 1
        return sent

    def write_partitions(self, table: str, data: pa.Table, *, days: Sequence[date] = (),
                         plain: Sequence[str] = ()) -> list[date]:
        """Upload ``data`` to a staging table, then swap its days in with INSERT OVERWRITE … PARTITION; listed
        ``days`` without rows are dropped (no rows, as locally)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        self.qualified(table)
        if PARTITION_COLUMN not in data.column_names:
            raise DataError(f"rows for table {table} have no '{PARTITION_COLUMN}' column")
        empty_days = sorted(set(days))
        values = pc.unique(pc.cast(data[PARTITION_COLUMN], pa.string())).to_pylist()
        if None in values:
            raise DataError(f"rows for table {table} have a null '{PARTITION_COLUMN}'")
        days = sorted(partition_day(v, where=f"rows for table {table}") for v in values)
        empty_days = [d for d in empty_days if d not in days]
        if empty_days and self.table_exists(table):
            for day in empty_days:
                self.execute(f"ALTER TABLE {self.qualified(table)} DROP IF EXISTS PARTITION "
                             f"(`{PARTITION_COLUMN}`={day_literal(day)})", table=table)
        if not days:
            return empty_days
        data = data.set_column(data.column_names.index(PARTITION_COLUMN), PARTITION_COLUMN,
                               pc.cast(data[PARTITION_COLUMN], pa.string()))
        self.ensure_table(table, data.schema)
        target_cols = [name for name, _ in self.columns(table)]
        missing = [c for c in target_cols if c not in data.column_names]
        if missing:
            raise DataError(f"rows for table {table} lack its column(s) {', '.join(missing)}")
        stage = f"modelsvc_stage_{table[:60]}_{uuid.uuid4().hex[:12]}"
        staged = data.select([*target_cols, PARTITION_COLUMN])
        self.ensure_table(stage, staged.schema, scratch=True, partitioned=False)
        try:
            self.insert_rows(stage, staged, scratch=True)
            # one multi-insert statement (HiveQL ``FROM … INSERT OVERWRITE … INSERT OVERWRITE …``): every day is
            # replaced whole, and one statement costs one round of job scheduling instead of one per day
            select_cols = ", ".join(f"q.`{c}`" for c in target_cols)
            qualified = self.qualified(table)
            inserts = [f"INSERT OVERWRITE TABLE {qualified} PARTITION (`{PARTITION_COLUMN}`={day_literal(day)}) "
                       f"SELECT {select_cols} WHERE q.`{PARTITION_COLUMN}` = {day_literal(day)}" for day in days]
            self.execute(f"FROM {self.qualified(stage, scratch=True)} q " + " ".join(inserts), table=table)
        finally:
            with suppress(ModelsvcError):
                self.drop_table(stage, scratch=True)
        return sorted([*days, *empty_days])

    def read_raw(self, *, start: date | None = None, end: date | None = None,
                 columns: Sequence[str] | None = None) -> pa.Table:
        table = self.settings.tables.raw_events
        if self.table_exists(table):  # a missing table: read's NotFoundError
            _check_raw_columns(table, self.columns(table))
        return self.read(table, start=start, end=end, columns=columns)

    # -- the ETL on the server -----------------------------------------------------------------------------------
    def write_features(self, sql: Callable[[Sequence[date], bool], FeatureSql], days: Sequence[date], *,
                       task: Task | None = None) -> dict[str, int]:
        """Rows never leave the cluster: the server computes the feature SQL, unsorted (a global sort would be
        wasted), and writes the partitions itself.

        ``hive.backfill_chunk_days`` days (default 31) are computed by one SELECT per table, so the lookback is read
        once per chunk instead of once per day: see :meth:`overwrite_partitions_from_select`. A one-day chunk, or
        ``backfill_chunk_days: 1``, sends one ``INSERT OVERWRITE TABLE … PARTITION (ds='…') SELECT …`` per table
        and day (:meth:`overwrite_partition_from_select`)."""
        tables = (self.settings.tables.user_features, self.settings.tables.realtime_features)
        step = self.hive.backfill_chunk_days
        rows = dict.fromkeys(tables, 0)
        single: list[date] = []  # days written one by one: counted at the end, one query per table
        for i in range(0, len(days), step):
            chunk = list(days[i:i + step])
            statements = sql(chunk, False)
            selects = (statements.user_features, statements.realtime_features)
            for table, select in zip(tables, selects, strict=True):
                if len(chunk) == 1:
                    self.overwrite_partition_from_select(table, chunk[0], select)
                else:
                    rows[table] += sum(self.overwrite_partitions_from_select(table, chunk, select).values())
            if len(chunk) == 1:
                single.append(chunk[0])
            if task is not None:
                task.advance(len(chunk), day=f"{chunk[0]}..{chunk[-1]}" if len(chunk) > 1 else str(chunk[0]))
        if single:  # all the days (contiguous), or the last one
            for table in tables:
                rows[table] += sum(n for day, n in self.partition_counts(table, start=single[0],
                                                                         end=single[-1]).items() if day in single)
        return rows

    def check_raw(self, table: str, *, start: date, end: date) -> dict[date, int]:
        """Check the raw-event table's columns against the contract and count its rows per partition in
        [start, end] (one aggregate query, run by the server). Missing table → NotFoundError."""
        if not self.table_exists(table):
            raise NotFoundError(f"table {self.database}.{table} does not exist on HiveServer2 at "
                                f"{endpoint(self.hive)}", hint="load raw events first (modelsvc demo-data)")
        _check_raw_columns(table, self.columns(table))
        counts = self._checked_counts(table, start=start, end=end)
        for day in self.partitions(table):  # empty partitions exist but have no rows to group
            if start <= day <= end:
                counts.setdefault(day, 0)
        return dict(sorted(counts.items()))

    def overwrite_partition_from_select(self, table: str, day: date, select_sql: str) -> None:
        """Replace partition ``day`` of ``table`` with the rows of ``select_sql`` whose ``ds`` is ``day``, computed
        and written by the server. ``select_sql`` yields the table's columns by name, ``ds`` included; the table is
        created (typed from the query's result columns) when missing."""
        qualified = self.qualified(table)
        literal = day_literal(day)
        self._ensure_from_select(table, select_sql)
        cols = ", ".join(f"q.`{name}`" for name, _ in self.columns(table))
        self.execute(f"INSERT OVERWRITE TABLE {qualified} PARTITION (`{PARTITION_COLUMN}`={literal}) "
                     f"SELECT {cols} FROM ({select_sql}) q WHERE q.`{PARTITION_COLUMN}` = {literal}", table=table)

    def overwrite_partitions_from_select(self, table: str, days: Sequence[date], select_sql: str) -> dict[date, int]:
        """Replace partitions ``days`` of ``table`` (each whole; a day without rows ends up empty, as with
        :meth:`overwrite_partition_from_select`) with the rows of ``select_sql``, computed once by the server for
        all of them; returns the rows written per day.

        1. ``CREATE TABLE stage STORED AS PARQUET AS SELECT …`` in the scratch database: the one expensive statement
           (the feature SQL, reading the lookback once for every day);
        2. the rows per day of the stage (a small aggregate): which days have rows;
        3. ``INSERT OVERWRITE TABLE t PARTITION (ds) SELECT … FROM stage``, a dynamic-partition insert, replaces
           every day with rows (``hive.exec.dynamic.partition.mode=nonstrict`` and Spark's
           ``spark.sql.sources.partitionOverwriteMode=dynamic`` are set for the session first);
        4. a dynamic overwrite leaves alone the partitions that receive no rows, so the days without rows are
           emptied by one multi-insert with static partitions (``FROM stage q INSERT OVERWRITE … PARTITION
           (ds='d') SELECT … WHERE q.ds='d' …``), which gives them the same empty partition a per-day statement
           does. A server that refuses dynamic partitions (its error names them) gets every day this way, and
           the session does not try again.
        The stage is dropped at the end, also on failure."""
        qualified = self.qualified(table)
        days = sorted({parse_date(d, option="ds") for d in days})  # every day checked before any statement
        literals = {d: day_literal(d) for d in days}
        if not days:
            return {}
        self._ensure_from_select(table, select_sql)
        cols = [name for name, _ in self.columns(table)]
        data_cols = ", ".join(f"q.`{c}`" for c in cols)
        all_cols = f"{data_cols}, q.`{PARTITION_COLUMN}`"
        stage = self.qualified(f"modelsvc_stage_{table[:60]}_{uuid.uuid4().hex[:12]}", scratch=True)
        try:
            self.execute(f"CREATE TABLE {stage} STORED AS PARQUET AS SELECT {all_cols} FROM ({select_sql}) q "
                         f"WHERE q.`{PARTITION_COLUMN}` >= {literals[days[0]]} "
                         f"AND q.`{PARTITION_COLUMN}` <= {literals[days[-1]]}", table=table)
            counts = {date.fromisoformat(str(ds)): int(n) for ds, n in self.scalar_rows(
                f"SELECT `{PARTITION_COLUMN}`, COUNT(*) FROM {stage} GROUP BY `{PARTITION_COLUMN}`")}
            static = [d for d in days if d not in counts]
            if counts and self._dynamic_partitions():
                try:
                    self.execute(f"INSERT OVERWRITE TABLE {qualified} PARTITION (`{PARTITION_COLUMN}`) "
                                 f"SELECT {all_cols} FROM {stage} q", table=table)
                except HiveQueryError as exc:
                    if not _DYNAMIC_REFUSED.search(exc.message):
                        raise
                    self._dynamic = False
                    static = days
            if static:
                inserts = [f"INSERT OVERWRITE TABLE {qualified} PARTITION (`{PARTITION_COLUMN}`={literals[d]}) "
                           f"SELECT {data_cols} WHERE q.`{PARTITION_COLUMN}` = {literals[d]}" for d in static]
                self.execute(f"FROM {stage} q " + " ".join(inserts), table=table)
        finally:
            with suppress(ModelsvcError):
                self.execute(f"DROP TABLE IF EXISTS {stage}")
        return {d: counts.get(d, 0) for d in days}

    def _dynamic_partitions(self) -> bool:
        """Set this session up for dynamic-partition overwrites (once per connection); False once the server
        refused one. A setting the server does not know or refuses is skipped: the insert itself decides."""
        if self._dynamic is None:
            for key, value in DYNAMIC_PARTITION_SETTINGS:
                with suppress(HiveQueryError):
                    self.execute(f"SET {key}={value}")
            self._dynamic = True
        return self._dynamic

    def _ensure_from_select(self, table: str, select_sql: str) -> None:
        """Create ``table`` typed from ``select_sql``'s result columns (``ds`` the partition key) when missing."""
        if table not in self._known_columns and not self.table_exists(table):
            with self._cursor(f"SELECT * FROM ({select_sql}) q LIMIT 0") as cur:
                desc = cur.description or []
            import pyarrow as pa

            schema = pa.schema([(_column_name(d[0]), arrow_type(d[1])) for d in desc])
            if PARTITION_COLUMN not in schema.names:
                raise DataError(f"the SELECT for table {table} has no '{PARTITION_COLUMN}' column")
            self.ensure_table(table, schema)

    def _per_partition(self, table: str, *, start: date, end: date,
                       aggregates: Sequence[str] = ()) -> list[tuple[Any, ...]]:
        """``(ds, rows, *aggregates)`` for each partition of ``table`` in [start, end] holding rows, sorted by
        ``ds``: one aggregate query run by the server."""
        ds = f"`{PARTITION_COLUMN}`"
        extra = "".join(f", {a}" for a in aggregates)
        return self.scalar_rows(
            f"SELECT {ds}, COUNT(*){extra} FROM {self.qualified(table)} "
            f"WHERE {ds} >= {day_literal(start)} AND {ds} <= {day_literal(end)} GROUP BY {ds} ORDER BY {ds}",
            table=table)

    def _checked_counts(self, table: str, *, start: date, end: date) -> dict[date, int]:
        """Rows per partition in [start, end], and the contract's data checks, in one aggregate query run by the
        server (as the local engine reads every file before the first write): ``is_clicked`` outside {0, 1}, and
        events outside their partition's UTC day (whose rows would make the features depend on the run's range).
        The first partition breaking a check is a DataError naming it and the count."""
        ts, ds = "event_timestamp", f"`{PARTITION_COLUMN}`"
        day = "CAST(floor(unix_timestamp(event_timestamp) / 86400) AS BIGINT)"  # the session time zone is UTC
        outside = f"{ts} IS NOT NULL AND {day} <> datediff({ds}, '1970-01-01')"
        rows = self._per_partition(table, start=start, end=end, aggregates=(
            "SUM(CASE WHEN is_clicked IS NOT NULL AND is_clicked NOT IN (0, 1) THEN 1 ELSE 0 END)",
            f"SUM(CASE WHEN {outside} THEN 1 ELSE 0 END)",
            f"MIN(CASE WHEN {outside} THEN event_id END)"))
        where = f"table {self.database}.{table}"
        for value, _, clicks, outside_n, example in rows:
            if clicks:
                raise DataError(f"{where}, partition ds={value}: column 'is_clicked' has {int(clicks)} value(s) "
                                "other than 0 and 1")
            if outside_n:
                raise DataError(f"{where}, partition ds={value}: {int(outside_n)} event(s) lie outside the "
                                f"partition's UTC day (e.g. event {example!r}); store each event in the "
                                "partition of its UTC date")
        return {date.fromisoformat(str(value)): int(n) for value, n, *_ in rows}

    def partition_counts(self, table: str, *, start: date, end: date) -> dict[date, int]:
        """Rows per partition of ``table`` in [start, end] (one aggregate query)."""
        return {date.fromisoformat(str(ds)): int(n) for ds, n in self._per_partition(table, start=start, end=end)}


# session settings for dynamic-partition overwrites: Hive's (also read by Spark for Hive tables), and Spark's for
# data-source tables (in its default "static" mode an INSERT OVERWRITE … PARTITION (ds) would empty every partition)
DYNAMIC_PARTITION_SETTINGS = (("hive.exec.dynamic.partition", "true"),
                              ("hive.exec.dynamic.partition.mode", "nonstrict"),
                              ("spark.sql.sources.partitionOverwriteMode", "dynamic"))
# what Hive and Spark say when dynamic partitions are off or in strict mode
_DYNAMIC_REFUSED = re.compile(r"dynamic partition|DYNAMIC_PARTITION", re.IGNORECASE)

_QUALIFIED_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.([A-Za-z_][A-Za-z0-9_]*)$")


def _column_name(name: str) -> str:
    # Hive returns "alias.column" for SELECT * unless hive.resultset.use.unique.column.names=false
    m = _QUALIFIED_COLUMN.match(name)
    return m.group(1) if m else name


def _as_utc(value: Any) -> datetime:
    if isinstance(value, str):  # pyhive leaves a timestamp as a string when it cannot parse it
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _rows(data: pa.Table) -> Iterator[tuple[Any, ...]]:
    import pyarrow as pa

    cols = []
    for column in data.columns:
        if pa.types.is_timestamp(column.type):
            unit_ns = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[column.type.unit]
            ints = column.cast(pa.int64()).to_pylist()
            cols.append([None if v is None else _from_ns(v * unit_ns) for v in ints])
        else:
            cols.append(column.to_pylist())
    yield from zip(*cols, strict=True)


def _json_value(value: Any) -> str | None:
    """A value as the string the server CASTs back (JSON carries it; every field is a string or null)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return repr(value)
    if isinstance(value, datetime):
        return _utc_naive(value).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, (date, int, str)):
        return value.isoformat() if isinstance(value, date) else str(value)
    raise DataError(f"value of type {type(value).__name__} cannot be sent to Hive")


def _from_ns(ns: int) -> datetime:
    from datetime import timedelta

    return datetime(1970, 1, 1) + timedelta(microseconds=ns // 1000)
