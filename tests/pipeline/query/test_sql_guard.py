"""Queries on a run are read-only: every statement kind that would write files, tables or the catalog, or
reach outside the run, is refused with one line naming it, in `sparkcnn sql`, the prompt and the Python
API, and nothing under the run root or the current folder changes. Temporary views and SETs stay allowed,
and SHOW VIEWS / SHOW TABLES / DESCRIBE list and describe every view of the run."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sparkcnn.pipeline import config
from sparkcnn.pipeline.cli.main import main
from sparkcnn.pipeline.query import sql, sql_guard
from sparkcnn.pipeline.training.run import Run
from tests.conftest import start_run

pytestmark = pytest.mark.slow

SETTINGS = ["train.images=200", "train.batch_size=100", "train.shard_size=50", "train.epochs=1"]


@pytest.fixture(scope="module")
def run(spark, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard") / "run"
    run = start_run(SETTINGS, root)
    run.train(spark)
    return run


def writes(root: str) -> list[tuple[str, str]]:
    """(statement, the kind its refusal names) for every kind of statement that writes or reaches out."""
    params = f"{root}/params"
    return [
        (f"INSERT OVERWRITE DIRECTORY '{params}' USING parquet SELECT 1 AS x", "INSERT OVERWRITE DIRECTORY"),
        (f"/* comment */ iNsErT oVeRwRiTe DiReCtOrY '{params}' USING parquet SELECT 1 AS x", "INSERT OVERWRITE"),
        (f"WITH x AS (SELECT 1 AS a) INSERT OVERWRITE DIRECTORY '{params}' USING parquet SELECT * FROM x", "INSERT"),
        (f"FROM loss INSERT OVERWRITE DIRECTORY '{params}' USING parquet SELECT *", "INSERT"),
        ("INSERT INTO loss SELECT * FROM loss", "INSERT"),
        ("CREATE TABLE t AS SELECT 1 AS x", "CREATE TABLE"),
        ("CREATE TABLE t (x INT) USING parquet", "CREATE TABLE"),
        ("DROP TABLE loss", "DROP TABLE"),
        ("ALTER TABLE loss RENAME TO lost", "RENAME TABLE"),
        ("TRUNCATE TABLE loss", "TRUNCATE TABLE"),
        ("CREATE DATABASE d", "CREATE DATABASE"),
        ("DROP DATABASE default CASCADE", "DROP DATABASE"),
        ("CREATE FUNCTION f AS 'java.lang.String'", "CREATE FUNCTION"),
        ("CREATE TEMPORARY FUNCTION f AS 'java.lang.String'", "CREATE FUNCTION"),
        ("DROP TEMPORARY FUNCTION tensor_array", "DROP FUNCTION"),
        (f"LOAD DATA LOCAL INPATH '{root}/config.toml' OVERWRITE INTO TABLE loss", "LOAD DATA"),
        ("MSCK REPAIR TABLE loss", "REPAIR TABLE"),
        (f"ADD JAR {root}/x.jar", "ADD JARS"),
        (f"ADD FILE {root}/config.toml", "ADD FILES"),
        (f"ADD ARCHIVE {root}/x.zip", "ADD ARCHIVES"),
        ("CACHE TABLE loss", "CACHE TABLE"),
        ("UNCACHE TABLE loss", "UNCACHE TABLE"),
        ("REFRESH TABLE loss", "REFRESH TABLE"),
        (f"REFRESH '{root}'", "REFRESH RESOURCE"),
        ("ANALYZE TABLE loss COMPUTE STATISTICS", "ANALYZE TABLE"),
        (f"EXECUTE IMMEDIATE 'INSERT OVERWRITE DIRECTORY ''{params}'' USING parquet SELECT 1'", "EXECUTE IMMEDIATE"),
        ("SELECT reflect('java.lang.System', 'exit', 3)", "a call of reflect"),
        ("select * from loss where 1 = (SELECT java_method('java.lang.System', 'exit', 3))", "a call of java_method"),
        (f"SELECT * FROM parquet.`{root}/metrics`", "a read of a path"),
        ("SELECT TRANSFORM(loss) USING 'touch hacked' FROM loss", "TRANSFORM"),
        (f"BEGIN INSERT OVERWRITE DIRECTORY '{params}' USING parquet SELECT 1; END", "BEGIN ... END"),
        ("CREATE VIEW v AS SELECT 1", "CREATE VIEW"),
        (f"CREATE TEMPORARY VIEW u USING parquet OPTIONS (path '{root}/metrics')", "CREATE TEMP VIEW USING"),
        ("CREATE GLOBAL TEMPORARY VIEW loss AS SELECT 1 AS x", "CREATE GLOBAL TEMPORARY VIEW"),
        ("DROP VIEW global_temp.loss", "DROP VIEW"),
        ("SET spark.sql.runSQLOnFiles=true", "SET spark.sql.runSQLOnFiles"),
        ("EXPLAIN CREATE TABLE t AS SELECT 1", "CREATE TABLE"),
    ]


def files(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under the roots with its size, time and bytes (folder indexes aside)."""
    found = {}
    for root in roots:
        for folder, dirs, names in os.walk(root):
            for name in [*dirs, *names]:
                path = Path(folder, name)
                if name != "_index":
                    found[str(path)] = (path.is_dir(), *(() if path.is_dir() else
                                                         (path.stat().st_mtime_ns, path.read_bytes())))
    return found


def test_every_writing_statement_is_refused_and_nothing_changes(run, tmp_path, monkeypatch, capsys):
    from sparkcnn.pipeline.query.api import QueryRefused, open_run

    monkeypatch.chdir(tmp_path)
    root = run.storage.url
    before = files(Path(run.storage.path("")), tmp_path)
    opened = open_run(root)
    wrong = []
    for statement, kind in writes(run.storage.path("")):
        code = main(["sql", "--run-root", root, statement])
        err = capsys.readouterr().err
        one_line = err.startswith("error: ") and err.count("\n") == 1
        if code != 2 or not (one_line and kind in err and "is refused" in err):
            wrong.append((statement, code, err))
        with pytest.raises(QueryRefused, match="is refused"):
            opened.sql(statement)
    assert wrong == []
    assert files(Path(run.storage.path("")), tmp_path) == before
    assert opened.sql("SELECT COUNT(*) AS n FROM params").column("n")[0].as_py() > 0


def test_the_prompt_refuses_writes_and_keeps_session_views_and_settings(run, tmp_path):
    statements = [s for s, _ in writes(run.storage.path(""))]
    script = ";\n".join([*statements, "SET spark.sql.shuffle.partitions=3", "SET spark.sql.shuffle.partitions",
                         "CREATE OR REPLACE TEMPORARY VIEW loss AS SELECT 14 AS fake", "SELECT * FROM loss",
                         "DROP VIEW loss", "SELECT COUNT(*) AS n FROM loss"]) + ";\n\\q\n"
    cwd, home = tmp_path / "cwd", tmp_path / "home"
    cwd.mkdir()
    before = files(Path(run.storage.path("")), cwd)
    proc = subprocess.run([sys.executable, "-m", "sparkcnn", "sql", "--run-root", run.storage.url],
                          input=script, text=True, capture_output=True, timeout=600, cwd=cwd,
                          env={**os.environ, "HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("is refused: queries on a sparkcnn run are read-only") == len(statements)
    assert "spark.sql.shuffle.partitions | 3" in proc.stdout and "  14" in proc.stdout
    assert "---\n200\n(1 row)" in proc.stdout  # the run's view again once the session's own is dropped
    assert files(Path(run.storage.path("")), cwd) == before


def test_show_views_and_tables_list_every_view_and_describe_works(spark, run, capsys):
    from sparkcnn import open_run

    want = set(sql.view_names(sql.view_sources(run)))
    assert main(["sql", "--run-root", run.storage.url, "--format", "csv", "SHOW VIEWS"]) == 0
    listed = {line.split(",")[1] for line in capsys.readouterr().out.splitlines()[1:]}
    assert want <= listed
    opened = open_run(run.storage.url)
    assert want <= set(opened.sql("SHOW TABLES").column("tableName").to_pylist())
    for name in sorted(want):
        columns = opened.sql(f"DESCRIBE {name}").column("col_name").to_pylist()
        assert "run_id" in columns or name in sql.BOOKKEEPING_VIEWS, name


def test_the_guard_is_compiled_once_and_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    jar = sql_guard.classes_jar()
    assert jar.parent == tmp_path / "sparkcnn" and jar.exists()
    stamp = jar.stat().st_mtime_ns
    assert sql_guard.classes_jar() == jar and jar.stat().st_mtime_ns == stamp


def test_a_non_loopback_host_needs_a_password(run, monkeypatch, capsys):
    monkeypatch.delenv("SPARKCNN_SQL_PASSWORD", raising=False)
    assert main(["sql", "--run-root", run.storage.url, "--serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "--host 0.0.0.0 is not a loopback address" in err and "--password-file FILE" in err
    assert "SPARKCNN_SQL_PASSWORD" in err and err.count("\n") == 1


def test_jdbc_sessions_need_the_password_are_read_only_and_keep_their_views(run, tmp_path):
    from tests.conftest import beeline, beeline_run, free_port, serve, stop_server

    secret = tmp_path / "password"
    secret.write_text("correct-horse-9\n")
    secret.chmod(0o600)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    port = free_port()
    url = f"jdbc:hive2://127.0.0.1:{port}/default"
    server = serve(run.storage.url, port, cwd / "server.log", "--password-file", str(secret))
    log = str(cwd / "server.log")
    before = {k: v for k, v in files(Path(run.storage.path("")), cwd).items() if k != log}
    try:
        count = "SELECT COUNT(*) AS n FROM loss"
        for password in (None, "wrong"):
            done = beeline_run(url, count, password)
            assert done.returncode != 0 and "n\n200" not in done.stdout
        assert beeline(url, count, "correct-horse-9") == ["n", "200"]
        params = run.storage.path("params")
        done = beeline_run(url, f"INSERT OVERWRITE DIRECTORY '{params}' USING parquet SELECT 1 AS x", "correct-horse-9")
        assert done.returncode != 0 and "INSERT OVERWRITE DIRECTORY is refused" in done.stderr
        shadow = "CREATE OR REPLACE TEMPORARY VIEW loss AS SELECT 14 AS fake; SELECT * FROM loss"
        assert beeline(url, shadow, "correct-horse-9")[-2:] == ["fake", "14"]
        assert beeline(url, count, "correct-horse-9") == ["n", "200"]  # another session: the run's view
        views = beeline(url, "SHOW VIEWS", "correct-horse-9")
        want = set(sql.view_names(sql.view_sources(run)))
        assert want <= {line.split(",")[1] for line in views[1:]}
        assert "image_id,bigint," in "\n".join(beeline(url, "DESCRIBE loss", "correct-horse-9"))
    finally:
        stop_server(server, cwd / "server.log")
    assert {k: v for k, v in files(Path(run.storage.path("")), cwd).items() if k != log} == before


def keystore(folder: Path, password: str) -> tuple[Path, Path]:
    """A PKCS12 keystore with a self-signed certificate for 127.0.0.1, and a truststore that trusts it."""
    store, cert, trust = folder / "server.p12", folder / "server.crt", folder / "trust.p12"
    keytool = ["keytool", "-noprompt", "-storepass", password]
    for args in (["-genkeypair", "-alias", "sparkcnn", "-keyalg", "RSA", "-keysize", "2048", "-validity", "2",
                  "-dname", "CN=127.0.0.1", "-ext", "san=ip:127.0.0.1", "-keystore", store, "-storetype", "PKCS12",
                  "-keypass", password],
                 ["-exportcert", "-alias", "sparkcnn", "-keystore", store, "-file", cert],
                 ["-importcert", "-alias", "sparkcnn", "-file", cert, "-keystore", trust, "-storetype", "PKCS12"]):
        subprocess.run([*keytool, *map(str, args)], check=True, capture_output=True)
    return store, trust


def test_jdbc_over_tls(run, tmp_path, monkeypatch):
    from tests.conftest import beeline, beeline_run, free_port, serve, stop_server

    store, trust = keystore(tmp_path, "store-secret")
    monkeypatch.setenv("SPARKCNN_SQL_KEYSTORE_PASSWORD", "store-secret")
    monkeypatch.setenv("SPARKCNN_SQL_PASSWORD", "tls-pass-1")
    port = free_port()
    log = tmp_path / "server.log"
    server = serve(run.storage.url, port, log, "--tls-keystore", str(store))
    try:
        url = f"jdbc:hive2://127.0.0.1:{port}/default;ssl=true"
        assert f"at {url} with a password (any user name), TLS" in log.read_text()
        secured = f"{url};sslTrustStore={trust};trustStorePassword=store-secret"
        assert beeline(secured, "SELECT COUNT(*) AS n FROM loss", "tls-pass-1") == ["n", "200"]
        plain = beeline_run(f"jdbc:hive2://127.0.0.1:{port}/default", "SELECT 1 AS n", "tls-pass-1")
        assert plain.returncode != 0 and "n\n1" not in plain.stdout
    finally:
        stop_server(server, log)


def test_jdbc_sessions_see_the_run_as_it_commits(spark, tmp_path):
    import time

    from sparkcnn.pipeline.query import sql_server
    from tests.conftest import beeline, free_port, serve, stop_server

    grown = Run(config.load(overrides=[*SETTINGS, f'run.root="{tmp_path / "growing"}"']))
    grown.save_config()
    grown.train(spark, 1)
    port = free_port()
    log = tmp_path / "server.log"
    server = serve(grown.storage.url, port, log)
    try:
        url = f"jdbc:hive2://127.0.0.1:{port}/default"
        count = "SELECT COUNT(DISTINCT iteration) AS n FROM loss"
        assert beeline(url, count) == ["n", "1"]
        grown.train(spark, 2)
        time.sleep(3 * sql_server.REFRESH_S)
        assert beeline(url, count) == ["n", "2"]
    finally:
        stop_server(server, log)
