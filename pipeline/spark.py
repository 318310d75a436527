"""The SparkSession a run uses."""
from __future__ import annotations

import os
import sys

from pipeline.config import REPO_CONF, Config

LOG_CONFIG = REPO_CONF / "log4j2.properties"


def session(cfg: Config, app_name: str = "sparkcnn", verbose: bool = False):
    """Get or create the SparkSession for a config; executors run this interpreter. Spark's own
    console output (log4j, stage progress bars) is quiet unless verbose."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if cfg.spark.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.master(cfg.spark.master).appName(app_name)
    settings = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": str(verbose).lower(),
        "spark.sql.shuffle.partitions": str(cfg.spark.partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.driver.memory": "6g",
    }
    if LOG_CONFIG.exists():
        settings["spark.driver.extraJavaOptions"] = f"-Dlog4j2.configurationFile={LOG_CONFIG.as_uri()}"
    settings.update({k: str(v) for k, v in cfg.spark.conf.items()})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("INFO" if verbose else "ERROR")
    return spark
