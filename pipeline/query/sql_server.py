"""`sparkcnn sql --serve`: Spark's Thrift JDBC/ODBC server (HiveServer2's protocol) over a run's views.

Every JDBC connection has a session of its own (its temporary views and SETs are its own). The run's
views are global temporary views, registered again as stages commit; the guard's parser (a Spark SQL
extension, sql_guard) refuses statements that would write, in every session, and shows each session
the run's views under their own names. The server listens on 127.0.0.1 unless --host says otherwise;
any other address needs a password (--password-file, else $SPARKCNN_SQL_PASSWORD), which the server
checks on every connection (HiveServer2's CUSTOM authentication, any user name); --tls-keystore
encrypts the connections (SASL PLAIN sends the password in clear text without it).
"""
from __future__ import annotations

import atexit
import hashlib
import ipaddress
import os
import socket
import tempfile
import time
from pathlib import Path

from sparkcnn.pipeline.errors import RunError
from sparkcnn.pipeline.query import sql_guard
from sparkcnn.pipeline.spark import signals

PASSWORD_ENV = "SPARKCNN_SQL_PASSWORD"
KEYSTORE_PASSWORD_ENV = "SPARKCNN_SQL_KEYSTORE_PASSWORD"
REFRESH_S = 2.0


def settings() -> dict[str, str]:
    """The server's session settings: a session per connection, each guarded."""
    return {**sql_guard.server_settings(), "spark.sql.hive.thriftServer.singleSession": "false"}


def check_port(host: str, port: int) -> None:
    """Refuse a port another program listens on (before Spark's server would fail on it in the JVM)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise RunError(f"port {port} on {host} is not free ({e.strerror}); choose another with --port") from None


def loopback(host: str) -> bool:
    """Whether every address a host name stands for is this machine's loopback."""
    try:
        found = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise RunError(f"--host {host}: {e.strerror}") from None
    return all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def password(host: str, password_file: str | None) -> str | None:
    """The password connections must give: --password-file's first line, else $SPARKCNN_SQL_PASSWORD;
    None on a loopback address without one. A non-loopback address without one is refused."""
    if password_file:
        try:
            lines = Path(password_file).read_text().splitlines()
        except OSError as e:
            raise RunError(f"--password-file {password_file}: {e.strerror}") from None
        if not lines or not lines[0]:
            raise RunError(f"--password-file {password_file} is empty; its first line is the password")
        return lines[0]
    if os.environ.get(PASSWORD_ENV):
        return os.environ[PASSWORD_ENV]
    if loopback(host):
        return None
    raise RunError(f"--host {host} is not a loopback address: serving it needs a password; put one in a file "
                   f"(chmod 600) and add --password-file FILE, or set {PASSWORD_ENV}")


def keystore_password(keystore: str | None) -> str | None:
    if keystore is None:
        return None
    if not Path(keystore).is_file():
        raise RunError(f"--tls-keystore {keystore}: no such file")
    if not os.environ.get(KEYSTORE_PASSWORD_ENV):
        raise RunError(f"--tls-keystore needs the keystore's password in {KEYSTORE_PASSWORD_ENV}")
    return os.environ[KEYSTORE_PASSWORD_ENV]


def _hash_file(secret: str) -> str:
    """A private temporary file holding the password's SHA-256, removed when the process ends."""
    handle, path = tempfile.mkstemp(prefix="sparkcnn-sql-", suffix=".sha256")
    with os.fdopen(handle, "w") as out:
        out.write(hashlib.sha256(secret.encode()).hexdigest())
    atexit.register(Path(path).unlink, missing_ok=True)
    return path


def jdbc_url(host: str, port: int, tls: bool = False) -> str:
    return f"jdbc:hive2://{host}:{port}/default" + (";ssl=true" if tls else "")


def configure(spark, host: str, port: int, secret: str | None, keystore: str | None, keystore_secret: str | None):
    """The SQL context the Thrift server starts with: address, password check, TLS."""
    context = spark._jsparkSession.sqlContext()
    spark._jvm.java.lang.System.setProperty("derby.stream.error.file", os.devnull)  # no derby.log in the cwd
    context.setConf("hive.server2.thrift.port", str(port))
    context.setConf("hive.server2.thrift.bind.host", host)
    context.setConf("hive.server2.transport.mode", "binary")
    if secret is not None:
        system = spark._jvm.java.lang.System
        system.setProperty("sparkcnn.sql.passwordHashFile", _hash_file(secret))
        # the password check reads a HiveConf of its own, made from the JVM's system properties
        system.setProperty("hive.server2.custom.authentication.class", sql_guard.PASSWORD_CLASS)
        context.setConf("hive.server2.authentication", "CUSTOM")
    if keystore is not None:
        context.setConf("hive.server2.use.SSL", "true")
        context.setConf("hive.server2.keystore.path", str(Path(keystore).resolve()))
        context.setConf("hive.server2.keystore.password", keystore_secret)
    return context


def serve(spark, views, host: str, port: int, secret: str | None = None, keystore: str | None = None,
          keystore_secret: str | None = None, on_ready=print, refresh_s: float = REFRESH_S) -> int:
    """Serve the run's views until SIGINT or SIGTERM; returns 0 once the server has stopped."""
    check_port(host, port)
    views.register()
    context = configure(spark, host, port, secret, keystore, keystore_secret)
    server = spark._jvm.org.apache.spark.sql.hive.thriftserver.HiveThriftServer2.startWithContext(context)
    try:
        access = "a password (any user name)" if secret is not None else "no password (this machine only)"
        on_ready(f"serving run {views.run.storage.url} at {jdbc_url(host, port, keystore is not None)} with "
                 f"{access}{', TLS' if keystore else ''} (views: {', '.join(views.names())}); "
                 f"Ctrl-C or SIGTERM stops it")
        while True:
            time.sleep(refresh_s)
            views.register()
    except signals.Interrupted as e:
        signals.settle()
        on_ready(f"stopping the server ({e.name})")
    finally:
        server.stop()
    return 0
