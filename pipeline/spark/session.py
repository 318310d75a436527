"""The SparkSession a run uses, and where Spark's own console output goes."""
from __future__ import annotations

import atexit
import logging
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from sparkcnn.pipeline import numerics
from sparkcnn.pipeline.config import JIT_FLAGS, REPO_CONF, Config
from sparkcnn.pipeline.spark import signals
from sparkcnn.pipeline.spark.class_archive import ClassArchive

LOG_CONFIG = REPO_CONF / "log4j2.properties"
PYTHON_LOGGERS = ("SQLQueryContextLogger", "DataFrameQueryContextLogger")
DYING_JVM = ("OutOfMemoryError", "Connection refused", "Answer from Java side is empty",
             "Error while sending or receiving")
JVM_EXIT_WAIT_S = 10.0
LOST_EXECUTOR = re.compile(r"ExecutorLostFailure \(executor (\S+) exited[^)]*\) Reason: Command exited with code (\d+)")
OOM_EXIT_CODE = 52  # what Spark's executor exits with on java.lang.OutOfMemoryError
FORBID_JVM = "SPARKCNN_FORBID_JVM"  # set by the test suite where no JVM may start


class Console:
    """Whether Spark may talk on the console; when it may not, the JVM's output goes to `jvm_log`."""

    verbose = False
    jvm_log: Path | None = None
    driver_memory = ""


def set_verbose(verbose: bool) -> None:
    Console.verbose = verbose


def jvm_log_tail(limit: int = 200_000) -> str:
    """The end of what this process's Spark JVM printed while the console was quiet ('' when nothing)."""
    path = Console.jvm_log
    if path is None or not path.exists():
        return ""
    data = path.read_bytes()
    return data[-limit:].decode(errors="replace")


def session(cfg: Config, app_name: str = "sparkcnn", verbose: bool | None = None, conf: dict | None = None,
            querying: bool = False):
    """Get or create the SparkSession for a config (plus `conf`, settings of the command's own);
    executors run this interpreter. A querying session (SQL on a run) gets the quick JIT when
    `spark.jit` is auto. Spark's own console output (the JVM's messages, log4j, stage progress bars,
    pyspark's error logs) is quiet unless verbose: it goes to a file whose end `jvm_log_tail` returns."""
    verbose = Console.verbose if verbose is None else verbose
    if os.environ.get(FORBID_JVM) and not _jvm_running():
        raise RuntimeError(f"a JVM was about to start where {FORBID_JVM} forbids it (a test not marked spark)")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if cfg.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    settings = spark_settings(cfg, app_name, verbose, conf, querying)
    Console.driver_memory = settings["spark.driver.memory"]
    archive = _class_archive(settings) if cfg.spark.class_archive and not _jvm_running() else None
    if not verbose:
        _launch_quiet_gateway(settings)
        _quiet_accumulator_server()
    builder = SparkSession.builder
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    if archive is not None and archive.partial is not None:
        atexit.register(archive.complete, getattr(spark.sparkContext._gateway, "proc", None))
    elif archive is not None:
        atexit.register(archive.make_later)
    spark.sparkContext.setLogLevel("INFO" if verbose else "WARN")
    for name in PYTHON_LOGGERS:
        _python_logger(name).setLevel(logging.WARNING if verbose else logging.CRITICAL)
    signals.attach(spark.sparkContext)
    return spark


def spark_settings(cfg: Config, app_name: str, verbose: bool, conf: dict | None, querying: bool) -> dict[str, str]:
    """The settings a session starts with (the class archive's option aside): the project's, the
    config's `spark.conf`, the command's own, and the driver JVM's JIT (`spark.jit`)."""
    settings = {
        "spark.master": cfg.spark.master,
        "spark.app.name": app_name,
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": str(verbose).lower(),
        "spark.sql.shuffle.partitions": str(cfg.spark.partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": "6g",
        **numerics.executor_env(),
    }
    if LOG_CONFIG.exists():
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    settings.update({k: str(v) for k, v in {**cfg.spark.conf, **(conf or {})}.items()})
    jit = cfg.spark.jit if cfg.spark.jit != "auto" else "quick" if querying else "full"
    _add_driver_java_option(settings, JIT_FLAGS[jit])
    return settings


def _python_logger(name: str) -> logging.Logger:
    from pyspark.logger import PySparkLogger

    return PySparkLogger.getLogger(name)


def _jvm_running() -> bool:
    """Whether this process has its Spark JVM already (started here, or by spark-submit)."""
    from pyspark import SparkContext

    return SparkContext._gateway is not None or "PYSPARK_GATEWAY_PORT" in os.environ


def _class_archive(settings: dict) -> ClassArchive:
    """The driver JVM about to start maps the machine's class-data archive (or, in its maker, makes it)."""
    archive = ClassArchive()
    _add_driver_java_option(settings, archive.java_option())
    return archive


def _add_driver_java_option(settings: dict, option: str) -> None:
    if option:
        key = "spark.driver.extraJavaOptions"
        settings[key] = f"{settings.get(key, '')} {option}".strip()


def _launch_quiet_gateway(settings: dict) -> None:
    """Start Spark's JVM with its stdout and stderr in a log file, unless one is running already."""
    from pyspark import SparkConf, SparkContext
    from pyspark.java_gateway import launch_gateway

    if _jvm_running():
        return
    handle, name = tempfile.mkstemp(prefix=f"sparkcnn-{os.getpid()}-", suffix="-spark.log")
    Console.jvm_log = Path(name)
    atexit.register(Console.jvm_log.unlink, missing_ok=True)
    conf = SparkConf(loadDefaults=False).setAll(list(settings.items()))
    with os.fdopen(handle, "wb") as log:
        gateway = launch_gateway(conf, popen_kwargs={"stdout": log, "stderr": log})
    SparkContext._ensure_initialized(gateway=gateway)
    logging.getLogger().addHandler(logging.FileHandler(Console.jvm_log))  # py4j logs its errors on the root


def _quiet_accumulator_server() -> None:
    """pyspark's accumulator server prints a traceback on the console when the JVM's connection to it breaks
    (the JVM died or was stopped mid-update); that goes to the log with Spark's other output instead."""
    from pyspark import accumulators

    def handle_error(server, request, client_address):
        logging.getLogger("pyspark.accumulators").warning("the accumulator server's connection ended",
                                                          exc_info=True)

    for server in (accumulators.AccumulatorTCPServer, accumulators.AccumulatorUnixServer):
        server.handle_error = handle_error


def jvm_ended(error: BaseException | None = None) -> str | None:
    """Why this process's Spark JVM has ended, None while it runs. After an error that a dying JVM
    gives (out of memory, a refused or broken connection, a call the JVM never answered), wait a few
    seconds for it to end."""
    if "pyspark" not in sys.modules:
        return None
    from py4j.protocol import Py4JError, Py4JJavaError
    from pyspark import SparkContext

    proc = getattr(SparkContext._gateway, "proc", None)
    if proc is None:
        return None
    text, unanswered = "", False
    for _ in range(10):
        if error is None:
            break
        unanswered |= isinstance(error, Py4JError) and not isinstance(error, Py4JJavaError)
        text, error = text + str(error), error.__cause__ or error.__context__
    try:
        code = proc.wait(JVM_EXIT_WAIT_S if unanswered or any(s in text for s in DYING_JVM) else 0)
    except subprocess.TimeoutExpired:
        return None
    if "OutOfMemoryError" in text + jvm_log_tail():
        return (f"Spark's JVM ran out of memory (java.lang.OutOfMemoryError) and ended; it had "
                f"spark.driver.memory={Console.driver_memory}, a larger value goes under [spark.conf] in the config")
    return f"Spark's JVM ended (exit code {code})"


def executor_lost(text: str) -> str | None:
    """A task's executor that died under it (a Spark job's failure text), as one line; None if none did."""
    match = LOST_EXECUTOR.search(text)
    if match is None:
        return None
    executor, code = match.group(1), int(match.group(2))
    if code != OOM_EXIT_CODE:
        return f"executor {executor} ended while running a task (exit code {code})"
    context = active_context()
    had = f"it had {context._jsc.sc().executorMemory()} MB, " if context is not None else ""
    return (f"executor {executor} ran out of memory (java.lang.OutOfMemoryError, exit code {code}) while running "
            f"a task; {had}a larger spark.executor.memory goes under [spark.conf] in the config")


def active_context():
    """This process's SparkContext, or None (without importing pyspark when nothing did)."""
    if "pyspark" not in sys.modules:
        return None
    from pyspark import SparkContext

    return SparkContext._active_spark_context


def stop() -> None:
    """Stop this process's SparkContext, if there is one; a JVM that is gone already is no error."""
    context = active_context()
    if context is not None:
        try:
            context.stop()
        except Exception:
            pass
