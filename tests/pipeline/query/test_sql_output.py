"""Query results as files: csv and json hold every value exactly; table abbreviates; --out is not replaced
without --overwrite."""
from __future__ import annotations

import base64
import csv
import io
import json

import numpy as np
import pyarrow as pa
import pytest

from sparkcnn.pipeline.errors import RunError
from sparkcnn.pipeline.query import sql_output

VALUES = np.array([0.1, 1 / 3, np.nan, np.inf, -np.inf, 1e-8, -0.0, 3.4e38, *np.arange(1000) / 7], np.float32)
BLOB = bytes(range(256)) * 16


def result() -> pa.Table:
    return pa.table({"image_id": pa.array([7], pa.int64()),
                     "v": pa.array([VALUES.astype(np.float64).tolist()], pa.list_(pa.float64())),
                     "f": pa.array([np.float32(0.1)], pa.float32()),
                     "d": pa.array([1 / 3], pa.float64()),
                     "nan": pa.array([float("nan")], pa.float64()),
                     "pixels": pa.array([BLOB], pa.binary())})


def test_csv_holds_every_value_exactly():
    (row,) = list(csv.DictReader(io.StringIO(sql_output.render(result(), "csv"))))
    values = json.loads(row["v"], parse_constant=float)
    assert len(values) == len(VALUES)
    np.testing.assert_array_equal(np.array([float(v) for v in values]), VALUES.astype(np.float64))
    assert row["f"] == "0.1" and float(row["d"]) == 1 / 3 and row["nan"] == "NaN"
    assert base64.b64decode(row["pixels"]) == BLOB


def test_json_holds_every_value_exactly():
    (row,) = [json.loads(line) for line in sql_output.render(result(), "json").splitlines()]
    assert row["v"][2:5] == ["NaN", "Infinity", "-Infinity"]
    np.testing.assert_array_equal(np.array([float(v) for v in row["v"]]), VALUES.astype(np.float64))
    assert row["f"] == 0.1 and row["d"] == 1 / 3 and row["nan"] == "NaN"
    assert base64.b64decode(row["pixels"]) == BLOB


def test_float32_text_is_the_shortest_that_reads_back():
    floats = np.random.default_rng(0).standard_normal(2000).astype(np.float32)
    table = pa.table({"x": pa.array(floats, pa.float32())})
    lines = sql_output.render(table, "csv").splitlines()[1:]
    assert all(np.float32(text) == x for text, x in zip(lines, floats))
    assert all(len(text) <= len(repr(float(x))) for text, x in zip(lines, floats))


def test_structs_maps_dates_and_decimals():
    import datetime
    import decimal

    table = pa.table({"s": pa.array([{"a": 1.5, "b": b"\x00"}]),
                      "m": pa.array([[("k", 2.0)]], pa.map_(pa.string(), pa.float64())),
                      "day": pa.array([datetime.date(2024, 2, 29)]),
                      "dec": pa.array([decimal.Decimal("1.10")], pa.decimal128(5, 2))})
    (row,) = [json.loads(line) for line in sql_output.render(table, "json").splitlines()]
    assert row == {"s": {"a": 1.5, "b": "AA=="}, "m": [["k", 2.0]], "day": "2024-02-29", "dec": "1.10"}


def test_a_column_neither_can_write_is_refused_naming_parquet():
    table = pa.table({"span": pa.array([pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval())})
    for fmt in ("csv", "json"):
        with pytest.raises(RunError, match=f"column span .* cannot be written as {fmt}; use --format parquet"):
            sql_output.render(table, fmt)


def test_table_abbreviates():
    text = sql_output.aligned(result())
    assert "<4096 bytes>" in text and ", ...]" in text


def test_format_help_says_table_abbreviates():
    from sparkcnn.pipeline.cli.parser import parser

    sub = next(a for a in parser()._actions if a.dest == "command").choices["sql"]
    help_text = sub.format_help()
    assert "abbreviated" in help_text and "--overwrite" in help_text
