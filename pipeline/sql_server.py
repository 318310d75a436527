"""`sparkcnn sql --serve`: Spark's Thrift JDBC/ODBC server (HiveServer2's protocol) over a run's views.

Every JDBC connection shares one Spark session (spark.sql.hive.thriftServer.singleSession), in which the
run's views and tensor functions are registered; the views are registered again as stages commit.
"""
from __future__ import annotations

import socket
import time

from pipeline import signals
from pipeline.errors import RunError

SINGLE_SESSION = {"spark.sql.hive.thriftServer.singleSession": "true"}
REFRESH_S = 2.0


def check_port(host: str, port: int) -> None:
    """Refuse a port another program listens on (before Spark's server would fail on it in the JVM)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise RunError(f"port {port} on {host} is not free ({e.strerror}); choose another with --port") from None


def jdbc_url(host: str, port: int) -> str:
    return f"jdbc:hive2://{host}:{port}/default"


def serve(spark, views, host: str, port: int, on_ready=print, refresh_s: float = REFRESH_S) -> int:
    """Serve the run's views until SIGINT or SIGTERM; returns 0 once the server has stopped."""
    check_port(host, port)
    views.register()
    context = spark._jsparkSession.sqlContext()
    context.setConf("hive.server2.thrift.port", str(port))
    context.setConf("hive.server2.thrift.bind.host", host)
    context.setConf("hive.server2.transport.mode", "binary")
    server = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(context)
    try:
        on_ready(f"serving run {views.run.storage.url} at {jdbc_url(host, port)} "
                 f"(views: {', '.join(views.names())}); Ctrl-C or SIGTERM stops it")
        while True:
            time.sleep(refresh_s)
            views.register()
    except signals.Interrupted as e:
        signals.settle()
        on_ready(f"stopping the server ({e.name})")
    finally:
        server.stop()
    return 0
