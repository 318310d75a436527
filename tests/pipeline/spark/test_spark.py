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
