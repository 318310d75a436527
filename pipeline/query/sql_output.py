"""A query's result as text (an aligned table for reading, lossless CSV and JSON files), and a run's views
as CREATE VIEW statements for a plain spark-sql shell (`--views-sql`).

`table` abbreviates (long arrays cut to 8 values, floats to 6 digits, binary as its size). `csv` and
`json` write every value in full: floats as the shortest text that reads back to the same value (of
a float32 column, the same float32), NaN and infinities as `NaN`, `Infinity`, `-Infinity` (JSON strings,
since JSON has no such numbers), binary as base64, arrays, structs and maps in a CSV cell as JSON text.
A column of a type neither can write (intervals) is refused with a pointer to `--format parquet`.
"""
from __future__ import annotations

import base64
import csv
import io
import json
import math

import numpy as np
import pyarrow as pa

from sparkcnn.pipeline.errors import RunError
from sparkcnn.pipeline.query.sql import run_id, view_sources

NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
ABBREVIATED = 8


def _cell(value) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        shown = ", ".join(_cell(v) for v in value[:ABBREVIATED])
        return f"[{shown}{', ...' if len(value) > ABBREVIATED else ''}]"
    return str(value)


def aligned(table: pa.Table) -> str:
    """A result as an aligned text table."""
    names = table.column_names
    rows = [[_cell(v) for v in row.values()] for row in table.to_pylist()]
    widths = [max([len(n), *(len(r[i]) for r in rows)]) for i, n in enumerate(names)]
    numeric = [pa.types.is_integer(f.type) or pa.types.is_floating(f.type) for f in table.schema]
    fmt = lambda cells: " | ".join(c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric))
    lines = [fmt(names), "-+-".join("-" * w for w in widths), *(fmt(r) for r in rows)]
    return "\n".join(lines) + f"\n({table.num_rows} row{'s' if table.num_rows != 1 else ''})"


def _float(value: float, type_: pa.DataType):
    """A float as a JSON value whose text reads back to it: non-finite ones as strings."""
    if not math.isfinite(value):
        return NON_FINITE[repr(value)]
    return float(str(np.float32(value))) if type_ == pa.float32() else value


def plain(value, type_: pa.DataType):
    """A value of an Arrow type as JSON-ready Python (lists, dicts, str, numbers)."""
    if value is None:
        return None
    if pa.types.is_floating(type_):
        return _float(float(value), type_)
    if pa.types.is_binary(type_) or pa.types.is_large_binary(type_) or pa.types.is_fixed_size_binary(type_):
        return base64.b64encode(value).decode()
    if pa.types.is_map(type_):
        return [[plain(k, type_.key_type), plain(v, type_.item_type)] for k, v in value]
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return [plain(v, type_.value_type) for v in value]
    if pa.types.is_struct(type_):
        return {f.name: plain(value[f.name], f.type) for f in type_}
    if pa.types.is_decimal(type_) or pa.types.is_temporal(type_):
        return str(value)
    return value


def writable(type_: pa.DataType) -> bool:
    """Whether csv and json can hold every value of a type."""
    if pa.types.is_interval(type_):
        return False
    if pa.types.is_map(type_):
        return writable(type_.key_type) and writable(type_.item_type)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_) or pa.types.is_fixed_size_list(type_):
        return writable(type_.value_type)
    if pa.types.is_struct(type_):
        return all(writable(f.type) for f in type_)
    return True


def _check(table: pa.Table, fmt: str) -> None:
    for f in table.schema:
        if not writable(f.type):
            raise RunError(f"column {f.name} ({f.type}) cannot be written as {fmt}; use --format parquet --out FILE")


def _csv_cell(value, type_: pa.DataType):
    value = plain(value, type_)
    if isinstance(value, (list, dict)):
        return json.dumps(value, allow_nan=False)
    return repr(value) if isinstance(value, float) else value


def render(table: pa.Table, fmt: str) -> str:
    """csv, or json (one object per line), text of a result: every value in full."""
    _check(table, fmt)
    types = [f.type for f in table.schema]
    rows = table.to_pylist()
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(table.column_names)
        for row in rows:
            writer.writerow([_csv_cell(v, t) for v, t in zip(row.values(), types)])
        return out.getvalue()
    return "".join(json.dumps({k: plain(v, t) for (k, v), t in zip(row.items(), types)}, allow_nan=False) + "\n"
                   for row in rows)


def views_sql(run, relative_to: str | None = None) -> str:
    """CREATE TEMPORARY VIEW statements that register the run's views in a plain spark-sql shell."""
    sources = view_sources(run)
    lines = [f"-- Views of run {run_id(run)}, generated by `sparkcnn sql --run-root RUN_ROOT --views-sql FILE`",
             "-- (regenerate it for your own run: file names are the run's). Use: spark-sql -i FILE",
             "-- The summary columns (<tensor>_mean, _std, _min, _max, _l2, _zeros) work in any Spark SQL shell;",
             "-- the tensor_* functions are registered by `sparkcnn sql`.", ""]
    for name, src in sources.items():
        selects = []
        for files, literals in src.groups:
            extra = "".join(f"{_sql_literal(v)} AS {k}, " for k, v in {**src.literals, **literals}.items())
            for f in files:
                path = src.uri(run, f)
                if relative_to and path.startswith(relative_to):
                    path = path[len(relative_to):].lstrip("/")
                selects.append(f"SELECT '{run_id(run)}' AS run_id, {extra}* FROM parquet.`{path}`")
        if selects:
            lines.append(f"CREATE OR REPLACE TEMPORARY VIEW {name} AS\n  " + "\n  UNION ALL ".join(selects) + ";")
        else:
            lines.append(f"-- {name}: no committed files" + (" (removed by retention)" if src.retired else ""))
    return "\n".join(lines) + "\n"


def _sql_literal(value) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)
