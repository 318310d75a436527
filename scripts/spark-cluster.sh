#!/usr/bin/env bash
# A real Spark standalone cluster on this machine, from the pyspark wheel's own jars:
#   scripts/spark-cluster.sh start [DIR]   a master on spark://127.0.0.1:PORT and SPARKCNN_WORKERS workers
#                                          (default 2, 1 core each)
#   scripts/spark-cluster.sh stop [DIR]    stop them (DIR holds logs and pids; default /tmp/sparkcnn-spark)
# PORT is SPARKCNN_SPARK_PORT (default 7077); workers get SPARKCNN_WORKER_MEMORY (default 3g) each.
set -euo pipefail
action="${1:-start}"
dir="${2:-/tmp/sparkcnn-spark}"
port="${SPARKCNN_SPARK_PORT:-7077}"
workers="${SPARKCNN_WORKERS:-2}"
python="${PYTHON:-$(cd "$(dirname "$0")/.." && pwd)/.venv/bin/python}"
spark_home="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
JAVA_OPTS=-Xmx512m
# shellcheck source=daemons.sh
. "$(dirname "$0")/daemons.sh"
export SPARK_HOME="$spark_home" SPARK_SCALA_VERSION=2.13 SPARK_LOCAL_IP=127.0.0.1 SPARK_LOG_DIR="$dir/logs" SPARK_WORKER_DIR="$dir/work"

start() {
  mkdir -p "$dir/logs" "$dir/pids" "$dir/work"
  start_daemon master "$spark_home/jars/*" org.apache.spark.deploy.master.Master --host 127.0.0.1 --port "$port" --webui-port $((port + 1003))
  for n in $(seq "$workers"); do
    start_daemon "worker$n" "$spark_home/jars/*" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 --cores 1 \
      --memory "${SPARKCNN_WORKER_MEMORY:-3g}" --webui-port $((port + 1003 + n)) --work-dir "$dir/work" \
      "spark://127.0.0.1:$port"
  done
  for _ in $(seq 60); do
    if [ "$(grep -c "Registering worker" "$dir/logs/master.log" 2>/dev/null || true)" -ge "$workers" ]; then
      echo "Spark up: spark://127.0.0.1:$port ($workers worker(s))"
      return 0
    fi
    sleep 1
  done
  echo "the Spark cluster did not come up; see $dir/logs" >&2
  return 1
}

stop() {
  for pid in "$dir"/pids/worker*; do [ -e "$pid" ] && stop_daemon "$(basename "$pid")"; done
  stop_daemon master
  echo "Spark cluster stopped"
}

case "$action" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: scripts/spark-cluster.sh start|stop [DIR]" >&2; exit 2 ;;
esac
