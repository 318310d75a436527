#!/usr/bin/env bash
# Build a wheel of sparkcnn and submit a training to a Spark master with spark-submit.
# Usage: scripts/submit.sh MASTER [sparkcnn train flags...]
#   MASTER: spark://host:7077 (standalone), yarn, k8s://https://host:port, or local[N]
# Settings: conf/spark-defaults.conf; SPARK_SUBMIT (default: the pyspark wheel's), PYTHON (default: .venv);
# SUBMIT_ARGS: more spark-submit options, e.g. SUBMIT_ARGS="--archives env.tar.gz#env".
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
master="${1:?usage: scripts/submit.sh MASTER [sparkcnn train flags...]}"
shift
python="${PYTHON:-$here/.venv/bin/python}"
dist="$(mktemp -d)"
"$python" -m pip wheel -q --no-deps -w "$dist" "$here"
wheel="$(ls "$dist"/sparkcnn-*.whl)"
spark_submit="${SPARK_SUBMIT:-$("$python" -c 'import os, pyspark; print(os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-submit"))')}"
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$python}"
exec "$spark_submit" --master "$master" --properties-file "$here/conf/spark-defaults.conf" \
  --driver-java-options "-Dlog4j2.configurationFile=file://$here/conf/log4j2.properties" ${SUBMIT_ARGS:-} \
  --py-files "$wheel" "$here/scripts/submit_main.py" train --set "spark.master=\"$master\"" "$@"
