"""The maker of the JVM class archive: a small Spark workload whose driver JVM writes the archive as it
exits (`python -m sparkcnn.pipeline.spark.archive_maker`; see `sparkcnn.pipeline.spark.class_archive`)."""
from __future__ import annotations

import os
import tempfile

from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.spark.class_archive import MAKER_ENV, ClassArchive
from sparkcnn.pipeline.spark.session import session


def make() -> int:
    """Make this machine's archive now, from a small Spark workload (Parquet, SQL, Arrow, Python workers),
    unless it exists or another process is making it (then wait for it). The archive is written as this
    process ends."""
    archive = ClassArchive()
    if archive.path is None or archive.path.exists():
        return 0
    if not archive._take_lock():
        archive.wait_for_maker()
        if archive.path.exists() or not archive._take_lock():
            return 0
    os.environ[MAKER_ENV] = "1"
    try:
        spark = session(Config())
        with tempfile.TemporaryDirectory() as folder:
            spark.range(100).selectExpr("id", "id % 3 AS k").write.parquet(f"{folder}/t")
            spark.read.parquet(f"{folder}/t").groupBy("k").count().orderBy("k").toArrow()
            spark.sparkContext.parallelize(range(4), 2).map(lambda x: x + 1).collect()
    except Exception as e:
        archive.failed.write_text(f"the maker's Spark workload failed: {e}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(make())
