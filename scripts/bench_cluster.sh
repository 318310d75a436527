#!/usr/bin/env bash
# The bench on a real HDFS and a Spark standalone cluster on this machine, started and stopped around it:
#   scripts/bench_cluster.sh [sparkcnn bench flags...]    e.g. --images 2000 --repeat 2 --out bench-cluster
# starts scripts/hdfs.sh (NameNode + 2 DataNodes) and scripts/spark-cluster.sh (master + 2 workers) under DIR
# (SPARKCNN_BENCH_DIR, default /tmp/sparkcnn-bench-cluster), runs
#   sparkcnn bench --run-root hdfs://127.0.0.1:PORT/bench --master spark://127.0.0.1:SPARK_PORT [flags]
# and stops both however the bench ends. Ports: SPARKCNN_HDFS_PORT (9820), SPARKCNN_SPARK_PORT (7077).
# The cluster's shape: SPARKCNN_WORKERS (2 workers of 1 core), SPARKCNN_HDFS_REPLICATION (2), and each
# executor gets its worker's memory, SPARKCNN_WORKER_MEMORY (3g; Spark's own default of 1g runs out in
# memory mode at 2,000 images).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${SPARKCNN_BENCH_DIR:-/tmp/sparkcnn-bench-cluster}"
port="${SPARKCNN_HDFS_PORT:-9820}"
spark_port="${SPARKCNN_SPARK_PORT:-7077}"
python="${PYTHON:-$here/../.venv/bin/python}"
export PYTHON="$python" SPARKCNN_WORKER_MEMORY="${SPARKCNN_WORKER_MEMORY:-3g}"
export SPARK_EXECUTOR_MEMORY="$SPARKCNN_WORKER_MEMORY"

stop() {
  "$here/spark-cluster.sh" stop "$dir/spark" || true
  "$here/hdfs.sh" stop "$dir/hdfs" || true
}
trap stop EXIT
"$here/hdfs.sh" start "$dir/hdfs"
"$here/spark-cluster.sh" start "$dir/spark"
export HADOOP_CONF_DIR="$dir/hdfs/conf/nn"
unset SPARKCNN_WEBHDFS
"$python" -m sparkcnn bench --run-root "hdfs://127.0.0.1:$port/bench" --master "spark://127.0.0.1:$spark_port" "$@"
