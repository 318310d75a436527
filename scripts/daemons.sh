# Shared by scripts/hdfs.sh and scripts/spark-cluster.sh (sourced): background Java daemons with pid files
# under $dir/pids and logs under $dir/logs.

start_daemon() {  # start_daemon NAME CLASSPATH CLASS [ARGS...]; JAVA_OPTS are passed to java
  local name="$1" classpath="$2"; shift 2
  # shellcheck disable=SC2086  # JAVA_OPTS holds several options
  nohup java ${JAVA_OPTS:-} -cp "$classpath" "$@" > "$dir/logs/$name.log" 2>&1 &
  echo $! > "$dir/pids/$name"
}

stop_daemon() {  # stop_daemon NAME: SIGTERM, up to 15 s to exit, then SIGKILL
  local pidfile="$dir/pids/$1"
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$(cat "$pidfile")" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
  fi
}
