#!/usr/bin/env bash
# Start a local HiveServer2 endpoint (Spark's Thrift server from the venv's pyspark) in the foreground, for trying
# the Hive engine by hand: Ctrl-C stops it. State (warehouse, Derby metastore, logs) goes to $HIVE_HOME_DIR.
#
#   scripts/hive-thrift-server.sh            # port 10000, state in ./data/hive
#   PORT=10001 scripts/hive-thrift-server.sh
#   MODELSVC_WAREHOUSE__ENGINE=hive MODELSVC_HIVE__PORT=10000 modelsvc demo-data   # in another shell
#
# Needs Java 17 (apt-get install openjdk-17-jre-headless) and pyspark (pip install 'modelsvc[dev]').
# The test suite starts its own throw-away server (tests/fixtures/hive.py), with the same settings.
set -euo pipefail

PORT="${PORT:-10000}"
BIND="${BIND:-127.0.0.1}"
VENV="${VENV:-.venv}"
HIVE_HOME_DIR="$(realpath -m "${HIVE_HOME_DIR:-data/hive}")"
SPARK_SUBMIT="$(realpath -m "${VENV}/bin/spark-submit")"

command -v java >/dev/null || { echo "Error: java not found (the Spark Thrift server needs a JDK 17)" >&2; exit 69; }
[[ -x "$SPARK_SUBMIT" ]] || { echo "Error: $SPARK_SUBMIT not found (pip install 'modelsvc[dev]')" >&2; exit 69; }
# spark-submit finds SPARK_HOME with whatever python3 is on PATH: point it at the venv's pyspark
SPARK_HOME="$("${VENV}/bin/python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
export SPARK_HOME
mkdir -p "$HIVE_HOME_DIR/warehouse" "$HIVE_HOME_DIR/derby" "$HIVE_HOME_DIR/logs"

export SPARK_LOCAL_IP="$BIND" TZ=UTC SPARK_LOG_DIR="$HIVE_HOME_DIR/logs" SPARK_PID_DIR="$HIVE_HOME_DIR"
cd "$HIVE_HOME_DIR"
exec "$SPARK_SUBMIT" \
  --master 'local[2]' \
  --driver-memory "${DRIVER_MEMORY:-1g}" \
  --name modelsvc-hiveserver2 \
  --conf spark.ui.enabled=false \
  --conf "spark.sql.warehouse.dir=$HIVE_HOME_DIR/warehouse" \
  --conf "spark.driver.extraJavaOptions=-Dderby.system.home=$HIVE_HOME_DIR/derby -Duser.timezone=UTC" \
  --conf spark.sql.session.timeZone=UTC \
  --conf spark.sql.shuffle.partitions=2 \
  --conf "spark.hadoop.javax.jdo.option.ConnectionURL=jdbc:derby:;databaseName=$HIVE_HOME_DIR/derby/metastore_db;create=true" \
  --class org.apache.spark.sql.hive.thriftserver.HiveThriftServer2 \
  --hiveconf "hive.server2.thrift.port=$PORT" \
  --hiveconf "hive.server2.thrift.bind.host=$BIND" \
  --hiveconf hive.server2.transport.mode=binary \
  --hiveconf hive.server2.authentication=NONE \
  spark-internal
