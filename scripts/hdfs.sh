#!/usr/bin/env bash
# A real HDFS on this machine: Apache Hadoop's own NameNode and DataNodes, bound to 127.0.0.1.
#   scripts/hdfs.sh start [DIR]   fetch the jars (once, cached), format, start 1 NameNode + 2 DataNodes,
#                                 wait until HDFS leaves safe mode with both DataNodes live
#   scripts/hdfs.sh stop [DIR]    stop them (DIR holds their data, logs and pids; default /tmp/sparkcnn-hdfs)
#   scripts/hdfs.sh stop-datanode N [DIR]   stop DataNode N (1 or 2), to test failures
# Ports come from SPARKCNN_HDFS_PORT (NameNode RPC, default 9820); the NameNode URL is hdfs://127.0.0.1:PORT,
# its web server (WebHDFS) listens on PORT+50; DIR/conf/nn is a HADOOP_CONF_DIR that names both.
# Every block is kept SPARKCNN_HDFS_REPLICATION times (1 or 2, default 2: one copy on each DataNode).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
action="${1:-start}"
if [ "$action" = stop-datanode ]; then node="${2:?which DataNode}"; dir="${3:-/tmp/sparkcnn-hdfs}"; else dir="${2:-/tmp/sparkcnn-hdfs}"; fi
port="${SPARKCNN_HDFS_PORT:-9820}"
replication="${SPARKCNN_HDFS_REPLICATION:-2}"
cache="${SPARKCNN_CACHE:-$HOME/.cache/sparkcnn}"
version=$(sed -n 's:.*<hadoop.version>\(.*\)</hadoop.version>.*:\1:p' "$here/hadoop/pom.xml")
lib="$cache/hadoop-$version/lib"
java_opts=(-Xmx512m -Djava.net.preferIPv4Stack=true)
JAVA_OPTS="${java_opts[*]}"
# shellcheck source=daemons.sh
. "$here/daemons.sh"

fetch() {
  if [ ! -f "$lib/.complete" ] || [ "$here/hadoop/pom.xml" -nt "$lib/.complete" ]; then
    mkdir -p "$lib"
    local out  # Maven 3.8 prints colour resets even when quiet: shown only when it fails
    out=$(mvn -q -B -f "$here/hadoop/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
      -DoutputDirectory="$lib" 2>&1) || { echo "$out" >&2; return 1; }
    touch "$lib/.complete"
  fi
}

site() {  # site CONF_DIR [extra properties as name=value ...]
  local conf="$1"; shift
  mkdir -p "$conf"
  cat > "$conf/core-site.xml" <<XML
<configuration><property><name>fs.defaultFS</name><value>hdfs://127.0.0.1:$port</value></property></configuration>
XML
  {
    echo "<configuration>"
    for kv in "dfs.replication=$replication" "dfs.namenode.rpc-address=127.0.0.1:$port" \
              "dfs.namenode.http-address=127.0.0.1:$((port + 50))" "dfs.namenode.name.dir=file://$dir/name" \
              "dfs.permissions.enabled=false" "dfs.namenode.safemode.extension=0" \
              "dfs.namenode.heartbeat.recheck-interval=5000" "dfs.heartbeat.interval=1" \
              "dfs.client.block.write.replace-datanode-on-failure.enable=false" \
              "dfs.client.block.write.locateFollowingBlock.initial.delay.ms=20" \
              "dfs.client.block.write.locateFollowingBlock.retries=12" \
              "dfs.namenode.datanode.registration.ip-hostname-check=false" "$@"; do
      echo "<property><name>${kv%%=*}</name><value>${kv#*=}</value></property>"
    done
    echo "</configuration>"
  } > "$conf/hdfs-site.xml"
  # Hadoop's servers look up their (here empty) web apps on the classpath, and log through log4j 1.
  mkdir -p "$conf/webapps/hdfs/WEB-INF" "$conf/webapps/datanode/WEB-INF" "$conf/webapps/static"
  printf '%s\n' "log4j.rootLogger=WARN,console" "log4j.appender.console=org.apache.log4j.ConsoleAppender" \
    "log4j.appender.console.layout=org.apache.log4j.PatternLayout" \
    "log4j.appender.console.layout.ConversionPattern=%d{HH:mm:ss} %p %c{1}: %m%n" > "$conf/log4j.properties"
  # JMX counters refreshed every second (Hadoop's default, 10 s, hides a benchmark's operations)
  echo "*.period=1" > "$conf/hadoop-metrics2.properties"
}

start() {
  fetch
  mkdir -p "$dir/logs" "$dir/pids"
  site "$dir/conf/nn"
  if [ ! -d "$dir/name/current" ]; then
    java "${java_opts[@]}" -cp "$dir/conf/nn:$lib/*" org.apache.hadoop.hdfs.server.namenode.NameNode \
      -format -force -nonInteractive > "$dir/logs/format.log" 2>&1 \
      || { echo "formatting the NameNode failed:" >&2; tail -5 "$dir/logs/format.log" >&2; return 1; }
  fi
  start_daemon namenode "$dir/conf/nn:$lib/*" org.apache.hadoop.hdfs.server.namenode.NameNode
  for n in 1 2; do
    local base=$((port + 100 * n))
    site "$dir/conf/dn$n" "dfs.datanode.data.dir=file://$dir/data$n" "dfs.datanode.address=127.0.0.1:$base" \
      "dfs.datanode.http.address=127.0.0.1:$((base + 1))" "dfs.datanode.ipc.address=127.0.0.1:$((base + 2))" \
      "dfs.datanode.hostname=127.0.0.1"
    start_daemon "datanode$n" "$dir/conf/dn$n:$lib/*" org.apache.hadoop.hdfs.server.datanode.DataNode
  done
  local admin=(java "${java_opts[@]}" -cp "$dir/conf/nn:$lib/*" org.apache.hadoop.hdfs.tools.DFSAdmin)
  for _ in $(seq 40); do
    sleep 1
    for name in namenode datanode1 datanode2; do
      kill -0 "$(cat "$dir/pids/$name")" 2>/dev/null || { echo "$name died:" >&2; tail -5 "$dir/logs/$name.log" >&2; return 1; }
    done
    if "${admin[@]}" -report -live 2>/dev/null | grep -q "Live datanodes (2)" \
       && "${admin[@]}" -safemode get 2>/dev/null | grep -q "OFF"; then
      echo "HDFS up: hdfs://127.0.0.1:$port, WebHDFS 127.0.0.1:$((port + 50)), replication $replication (data under $dir)"
      echo "for sparkcnn: export HADOOP_CONF_DIR=$dir/conf/nn"
      return 0
    fi
  done
  echo "HDFS did not come up; see $dir/logs" >&2
  tail -20 "$dir/logs/namenode.log" >&2
  return 1
}

case "$action" in
  start) start ;;
  stop) for d in datanode1 datanode2 namenode; do stop_daemon "$d"; done; echo "HDFS stopped" ;;
  stop-datanode) stop_daemon "datanode$node" ;;
  fetch) fetch ;;
  *) echo "usage: scripts/hdfs.sh start|stop|stop-datanode N|fetch [DIR]" >&2; exit 2 ;;
esac
