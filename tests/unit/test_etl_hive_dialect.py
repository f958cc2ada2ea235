"""The 'hive' dialect of the feature SQL, run by an embedded Spark SQL (what the Spark Thrift server executes),
on the same semantic cases as DuckDB. No server needed: a local SparkSession, session time zone UTC."""

from __future__ import annotations

import shutil
from datetime import date, datetime, timezone

import pytest

from modelsvc.etl import feature_sql
from tests.etl_cases import CASES, RANDOM_CASES, EtlCase, _normal, events_table, same_rows

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def spark():
    pytest.importorskip("pyspark")
    if shutil.which("java") is None:
        pytest.skip("no java on PATH")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("modelsvc-etl-dialect")
               .config("spark.sql.session.timeZone", "UTC").config("spark.ui.enabled", "false")
               .config("spark.sql.shuffle.partitions", "1").getOrCreate())
    yield session
    session.stop()


def _rows(df) -> list[dict]:
    """Rows with timestamps rendered by Spark in its session zone (UTC), so the local zone plays no part."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import TimestampType

    for field in df.schema.fields:
        if isinstance(field.dataType, TimestampType):
            df = df.withColumn(field.name, F.date_format(field.name, "yyyy-MM-dd HH:mm:ss.SSSSSS"))
    out = []
    for row in df.collect():
        r = row.asDict()
        for k in ("event_timestamp", "created_timestamp"):
            r[k] = datetime.fromisoformat(r[k]).replace(tzinfo=timezone.utc)
        out.append(r)
    return _normal(out)


@pytest.mark.parametrize("case", [*CASES, *RANDOM_CASES], ids=lambda c: c.name)
def test_hive_dialect_on_spark(spark, settings, case: EtlCase):
    table = events_table(case.events).to_pandas()
    # timestamps travel as UTC strings and are cast by Spark in its session zone (UTC)
    table["event_timestamp"] = table["event_timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S.%f")
    spark.createDataFrame(table).selectExpr(
        "event_id", "CAST(user_id AS BIGINT) AS user_id", "CAST(event_timestamp AS TIMESTAMP) AS event_timestamp",
        "event_type", "platform", "CAST(purchase_value AS DOUBLE) AS purchase_value",
        "CAST(is_clicked AS INT) AS is_clicked", "ds",
    ).createOrReplaceTempView("raw_events")
    start, end = date.fromisoformat(case.start), date.fromisoformat(case.end)
    days = [date.fromordinal(d) for d in range(start.toordinal(), end.toordinal() + 1)]
    sql = feature_sql("hive", days=days, raw_table="raw_events", etl=settings.etl,
                      created=datetime(2030, 1, 1, tzinfo=timezone.utc))
    users = _rows(spark.sql(sql.user_features))
    realtime = _rows(spark.sql(sql.realtime_features))
    assert same_rows(users, case.user_features), f"got {users}"
    assert same_rows(realtime, case.realtime), f"got {realtime}"
