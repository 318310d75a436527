"""The settings a SparkSession starts with."""
import dataclasses

from sparkcnn.pipeline import config
from sparkcnn.pipeline.spark.session import spark_settings

C1_ONLY = "-XX:TieredStopAtLevel=1"


def java_options(cfg, querying):
    return spark_settings(cfg, "test", False, None, querying).get("spark.driver.extraJavaOptions", "")


def test_sessions_that_query_a_run_compile_with_c1_only_unless_the_config_says_otherwise():
    auto = config.load()
    assert auto.spark.jit == "auto"
    assert C1_ONLY in java_options(auto, querying=True) and C1_ONLY not in java_options(auto, querying=False)
    full, quick = (config.load(overrides=[f'spark.jit="{jit}"']) for jit in ("full", "quick"))
    assert C1_ONLY not in java_options(full, querying=True) and C1_ONLY in java_options(quick, querying=False)
    own = dataclasses.replace(auto, spark=dataclasses.replace(auto.spark, conf={"spark.driver.extraJavaOptions": "-Dx=1"}))
    assert java_options(own, querying=True).split() == ["-Dx=1", C1_ONLY]  # the config's own options are kept


def test_an_executor_that_died_under_a_task_is_named_not_py4js_wrapper():
    from sparkcnn.pipeline.training.driver import failure_reason

    job = ("An error occurred while calling z:org.apache.spark.api.python.PythonRDD.collectAndServe.\n"
           ": org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 117.0 failed 4 times, "
           "most recent failure: Lost task 1.3 in stage 117.0 (TID 224) (127.0.0.1 executor 3): ExecutorLostFailure "
           "(executor 3 exited caused by one of the running tasks) Reason: Command exited with code {}\n"
           "Driver stacktrace:\n\tat org.apache.spark.scheduler.DAGScheduler.abortStage(DAGScheduler.scala:4568)")
    oom = failure_reason(RuntimeError(job.format(52)))
    assert oom.startswith("executor 3 ran out of memory") and "spark.executor.memory goes under [spark.conf]" in oom
    assert failure_reason(RuntimeError(job.format(137))) == "executor 3 ended while running a task (exit code 137)"
    assert failure_reason(RuntimeError("ValueError: bad shape")) == "ValueError: bad shape"


def connection_cut_mid_update(capfd) -> str:
    """What the console shows when a connection to pyspark's accumulator server ends mid-update (as when
    the JVM dies)."""
    import socket
    import time

    from pyspark import accumulators

    server = accumulators._start_update_server("token", False)
    try:
        with socket.create_connection(server.server_address) as conn:
            conn.sendall(b"token")  # authenticated, then the update's length never comes
        time.sleep(1.5)  # the server polls its connection once a second
    finally:
        server.shutdown()
    return capfd.readouterr().err


def test_a_broken_accumulator_connection_prints_no_traceback_when_quiet(capfd, monkeypatch, caplog):
    import socketserver

    from pyspark import accumulators

    from sparkcnn.pipeline.spark import session

    for cls in (accumulators.AccumulatorTCPServer, accumulators.AccumulatorUnixServer):
        monkeypatch.setattr(cls, "handle_error", socketserver.BaseServer.handle_error)  # as pyspark has it
    assert "EOFError" in connection_cut_mid_update(capfd)  # pyspark's own handling: a traceback
    session._quiet_accumulator_server()
    assert connection_cut_mid_update(capfd) == ""
    assert any(r.exc_info and r.exc_info[0] is EOFError for r in caplog.records)
