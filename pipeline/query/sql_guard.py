"""Queries on a run are read-only: every statement is parsed by Spark and checked against an allow-list
of plan nodes (reads, temporary views, session SETs, listings) before Spark runs it.

The policy is a small Java class (pipeline/java/sparkcnn), compiled on first use with the JDK's javac
against pyspark's jars and kept under ~/.cache/sparkcnn, keyed by Spark's version, the java binary and
the sources. `sparkcnn sql`, the prompt and the Python API call it over py4j; the JDBC server puts
the jar on its driver's class path: a Spark SQL extension that guards every session's parser, and the
class that checks passwords.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from sparkcnn.pipeline.errors import QueryError, QueryRefused, RunError
from sparkcnn.pipeline.spark.class_archive import cache_folder, java_binary

SOURCES = Path(__file__).parent / "java"
EXTENSION = "sparkcnn.Extension"
PASSWORD_CLASS = "sparkcnn.Password"
SESSION = {"spark.sql.runSQLOnFiles": "false", "spark.sql.variable.substitute": "false",
           "spark.sql.catalogImplementation": "in-memory"}


def _sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def _jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def jar_path() -> Path:
    """Where the compiled classes for this Spark, this java and these sources are kept."""
    import pyspark

    digest = hashlib.sha256(f"{pyspark.__version__}\0{_jars()}\0{java_binary()}".encode())
    for source in _sources():
        digest.update(source.read_bytes())
    return cache_folder() / f"sparkcnn-guard-{digest.hexdigest()[:16]}.jar"


def _javac() -> str:
    java = java_binary()
    found = java.with_name("javac") if java else None
    javac = str(found) if found and found.exists() else shutil.which("javac")
    if not javac:
        raise RunError("sparkcnn sql needs a JDK's javac to compile its query guard (once); install a JDK "
                       "(e.g. openjdk-17-jdk-headless) or set JAVA_HOME to one")
    return javac


def classes_jar() -> Path:
    """The compiled guard classes, compiled now when this machine has none for this Spark and java."""
    path = jar_path()
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="sparkcnn-guard-") as tmp:
        done = subprocess.run([_javac(), "-nowarn", "-cp", f"{_jars()}/*", "-d", tmp, *map(str, _sources())],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RunError(f"compiling the query guard failed: {done.stderr.strip().splitlines()[0]}")
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        with zipfile.ZipFile(partial, "w") as jar:
            for f in sorted(Path(tmp).rglob("*.class")):
                jar.write(f, f.relative_to(tmp).as_posix())
        os.replace(partial, path)
    return path


def server_settings() -> dict[str, str]:
    """A JDBC server's session settings: the guard's extension in every session. The jar goes on the
    driver's class path (the Thrift server loads the password check in threads that see no other)."""
    return {**SESSION, "spark.driver.extraClassPath": str(classes_jar()), "spark.sql.extensions": EXTENSION,
            "spark.sparkcnn.sessionViews": "true"}


_policies: dict[int, object] = {}


def _policy(spark):
    """The Java policy, an object in the session's JVM (its own class loader when not on the class path)."""
    jvm = spark._jvm
    key = id(spark.sparkContext._gateway)
    if key not in _policies:
        gateway = spark.sparkContext._gateway
        urls = gateway.new_array(jvm.java.net.URL, 1)
        urls[0] = jvm.java.net.URL(classes_jar().as_uri())
        loader = jvm.java.net.URLClassLoader(urls, jvm.Thread.currentThread().getContextClassLoader())
        cls = jvm.java.lang.Class.forName("sparkcnn.Policy", True, loader)
        _policies[key] = cls.getDeclaredConstructor(gateway.new_array(jvm.java.lang.Class, 0)).newInstance(
            gateway.new_array(jvm.java.lang.Object, 0))
    return _policies[key]


def parsed(spark, query: str):
    """Spark's parsed (unresolved) plan of a statement; QueryError with Spark's message when it does not
    parse, QueryRefused when the session's own parser is the guard and refuses it."""
    try:
        return spark._jsparkSession.sessionState().sqlParser().parsePlan(query)
    except Exception as e:
        error = getattr(e, "java_exception", None)
        if error is not None and error.getClass().getName() == "java.lang.SecurityException":
            raise QueryRefused(str(error.getMessage())) from None
        lines = str(e).strip().splitlines()
        raise QueryError(lines[0] if lines else type(e).__name__) from None


def checked(spark, query: str):
    """The parsed plan of a statement that only reads or changes the session's own state; QueryRefused,
    naming its kind, for one that would write or reach outside the run and the session."""
    plan = parsed(spark, query)
    policy = _policy(spark)
    kind = policy.check(plan)
    if kind is not None:
        raise QueryRefused(policy.message(kind))
    return plan


def is_listing(plan) -> bool:
    """Whether a parsed statement lists the session's tables or views (SHOW TABLES, SHOW VIEWS)."""
    return plan.getClass().getSimpleName() in ("ShowTables", "ShowViews", "ShowTablesExtended")


def session_view(plan) -> tuple[str, str] | None:
    """("create" or "drop", name) for a statement that creates or drops a temporary view; else None."""
    kind = plan.getClass().getSimpleName()
    if kind == "CreateViewCommand":
        return "create", plan.name().table().lower()
    if kind == "DropView":
        return "drop", plan.child().nameParts().last().lower()
    return None
