"""A DataFrame of images and labels checked, digested and written by Spark as the Parquet source a run
ingests (sparkcnn.pipeline.data.sources.parquet_images): the driver sees one row of counts and hashes, never an image."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from sparkcnn.pipeline.errors import DataError

IMAGE_STRUCT = {"height", "width", "nChannels", "data"}
INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")
HASH_RANGE = 1_000_000


@dataclass(frozen=True)
class Frame:
    """The columns a run's source gets (image, label, split, raw shape), and what identifies the data."""

    selected: object  # the DataFrame to write
    digest: str
    class_names: tuple[str, ...] | None  # from StringIndexer's metadata, when the labels carry it


def _image_kind(df, column: str, raw) -> str:
    """binary, raw or struct; a DataError naming the column otherwise."""
    from pyspark.sql.types import BinaryType, IntegerType, LongType, ShortType, StructType

    kind = df.schema[column].dataType
    if isinstance(kind, StructType) and IMAGE_STRUCT <= set(kind.fieldNames()):
        return "struct"
    if not isinstance(kind, BinaryType):
        raise DataError(f"image column {column} is {kind.simpleString()}; encoded image bytes, raw uint8 bytes "
                        f"(with heightCol, widthCol, channelsCol) or Spark's image struct needed")
    for name in raw or ():
        if not isinstance(df.schema[name].dataType, (IntegerType, LongType, ShortType)):
            raise DataError(f"column {name} is {df.schema[name].dataType.simpleString()}; raw image sizes must be integers")
    return "raw" if raw else "binary"


def _label_kind(df, column: str) -> str:
    kind = type(df.schema[column].dataType).__name__
    if kind in INTEGRAL:
        return "integer"
    if kind == "StringType":
        return "string"
    if kind in ("DoubleType", "FloatType"):
        return "double"
    raise DataError(f"label column {column} is {df.schema[column].dataType.simpleString()}; integers, strings or "
                    f"integral doubles (as StringIndexer writes them) needed")


def metadata_names(df, column: str) -> tuple[str, ...] | None:
    """Class names of a label column from its ML attribute (StringIndexer's `vals`), None without one."""
    attr = df.schema[column].metadata.get("ml_attr", {})
    names = attr.get("vals") or attr.get("values")
    return tuple(names) if names else None


def prepare(df, image: str, label: str, raw, seed: int, test_fraction: float) -> Frame:
    """Check the columns, count and hash the rows in one Spark job, and select what the source holds:
    `image`, `label` (integers or strings), `height`/`width`/`channels` for raw bytes, and `split` (a
    seeded hash of the row, so the same rows always split alike)."""
    from pyspark.sql import functions as F

    missing = [c for c in (image, label, *(raw or ())) if c not in df.columns]
    if missing:
        raise DataError(f"the DataFrame has no column {', '.join(missing)} (columns: {', '.join(df.columns)})")
    image_kind, label_kind = _image_kind(df, image, raw), _label_kind(df, label)
    lab = F.col(label)
    shape = [F.col(c).cast("int").alias(n) for c, n in zip(raw or (), ("height", "width", "channels"))]
    columns = [F.col(image).alias("image"), (lab if label_kind == "string" else lab.cast("long")).alias("label"), *shape]
    row_hash = F.xxhash64(*(F.col(c) for c in (image, label, *(raw or ()))))
    stats = df.agg(
        F.count(F.lit(1)).alias("rows"),
        F.sum(lab.isNull().cast("long")).alias("null_labels"),
        F.sum(F.col(image).isNull().cast("long")).alias("null_images"),
        F.sum((lab.cast("long") != lab).cast("long") if label_kind == "double" else F.lit(0)).alias("fractional"),
        F.min(lab.cast("double") if label_kind != "string" else F.lit(0.0)).alias("smallest"),
        F.sum(row_hash.cast("decimal(38,0)")).alias("hash"),
        F.sum(F.hash(F.col(image), lab).cast("decimal(38,0)")).alias("hash2"),
    ).first()
    where = f"label column {label}"
    if not stats["rows"]:
        raise DataError("the DataFrame has no rows; a classifier needs labelled images")
    for count, what in ((stats["null_labels"], f"{where} has {{}} null(s)"),
                        (stats["null_images"], f"image column {image} has {{}} null(s)"),
                        (stats["fractional"], f"{where} has {{}} value(s) that are not whole numbers")):
        if count:
            raise DataError(what.format(count))
    if stats["smallest"] < 0:
        raise DataError(f"{where} has a negative label ({stats['smallest']:g})")
    split = F.when(F.pmod(F.xxhash64(F.lit(seed), row_hash), F.lit(HASH_RANGE)) < int(test_fraction * HASH_RANGE),
                   "test").otherwise("train").alias("split")
    names = metadata_names(df, label) if label_kind == "double" else None
    doc = [stats["rows"], str(stats["hash"]), str(stats["hash2"]), image_kind, label_kind, seed, test_fraction, names]
    digest = hashlib.sha256(json.dumps(doc).encode()).hexdigest()
    return Frame(df.select(*columns, split), digest, names)


def write(frame: Frame, uri: str) -> None:
    """The selected rows as Parquet at `uri` (replacing a partial write of an earlier attempt)."""
    frame.selected.sparkSession.sparkContext.setJobDescription("write the DataFrame as the run's source")
    frame.selected.write.mode("overwrite").parquet(uri)
