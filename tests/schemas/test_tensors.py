import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sparkcnn.pipeline.config import Config
from sparkcnn.pipeline.training.run import network_for
from sparkcnn.schemas.tables import arrays_to_table, table_schema, table_to_arrays
from sparkcnn.schemas.tensors import TensorSpec, spec_of


@pytest.mark.parametrize("dtype,shape", [("float32", (4, 3, 2)), ("uint8", (3072,)), ("int8", (2, 2))])
def test_round_trip(dtype, shape):
    spec = TensorSpec("t", dtype, shape)
    data = (np.random.default_rng(0).standard_normal((5, *shape)) * 50).astype(dtype)
    column = spec.encode(data)
    assert column.type == pa.binary() and len(column) == 5
    np.testing.assert_array_equal(spec.decode(column), data)
    np.testing.assert_array_equal(spec.decode(pa.chunked_array([column.slice(0, 2), column.slice(2)])), data)


def test_wrong_row_length_is_refused():
    with pytest.raises(ValueError, match="12 bytes"):
        TensorSpec("t", "float32", (3,)).decode(pa.array([b"\x00" * 12, b"\x00" * 8]))
    with pytest.raises(ValueError, match="shape"):
        TensorSpec("t", "float32", (3,)).encode(np.zeros((2, 4), np.float32))


def test_parquet_files_declare_dtype_and_shape(tmp_path):
    g = network_for(Config())
    schema = table_schema(g, "pool1_fwd")
    path = tmp_path / "t.parquet"
    pq.write_table(schema.empty_table(), path)
    read = pq.read_schema(path)
    specs = {s.name: s for s in g.tensor_specs()["pool1_fwd"]}
    assert spec_of(read.field("out")) == specs["out"] == TensorSpec("out", "float32", (16, 16, 32))
    assert spec_of(read.field("argmax")) == TensorSpec("argmax", "int8", (16, 16, 32))
    assert read.metadata[b"sparkcnn.table"] == b"pool1_fwd"
    assert not any(pa.types.is_list(f.type) for f in read)


def test_named_arrays_round_trip():
    arrays = {"a.w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([1.5], np.float32)}
    back = table_to_arrays(arrays_to_table(arrays, "params"))
    assert set(back) == set(arrays)
    for name in arrays:
        np.testing.assert_array_equal(back[name], arrays[name])
        assert back[name].dtype == np.float32


def test_sparse_round_trip_is_bit_exact():
    from sparkcnn.schemas.tensors import SparseTensorSpec, decode_column

    data = np.zeros((4, 3, 5), np.float32)
    data[0, 1, 2], data[2, 0, 0], data[2, 2, 4], data[3, 1, 1] = 1.5, -2.0, 3.25, -0.0
    spec = SparseTensorSpec("dx", "float32", (3, 5))
    mask, values = spec.encode(data)
    table = pa.table({"dx_mask": mask, "dx_values": values},
                     schema=pa.schema(list(spec.fields())))
    back = decode_column(table, "dx")
    assert back.tobytes() == data.tobytes()
    assert [len(v) for v in values.to_pylist()] == [4, 0, 8, 4]


def test_cache_policy_changes_columns():
    g = network_for(Config())
    recompute = table_schema(g, "relu1_fwd", {"relu_mask": "recompute"})
    assert "mask" not in recompute.names and "out_l2" in recompute.names
    assert table_schema(g, "relu1_fwd", {"relu_mask": "bytes"}).field("mask").metadata[b"sparkcnn.shape"] == b"[32, 32, 32]"
    assert "argmax" not in table_schema(g, "pool1_fwd", {"pool_argmax": "recompute"}).names
    assert {"dx_mask", "dx_values"} <= set(table_schema(g, "relu1_bwd", {"sparse_gradients": True}).names)


@pytest.mark.parametrize("dtype,shape", [("float32", (32, 32, 32)), ("float32", (7, 5, 3)), ("float64", (300,)),
                                         ("uint8", (32, 32, 3))])
def test_summaries_of_a_row_do_not_depend_on_the_rows_beside_it(dtype, shape):
    """Tensors are summarised a few rows at a time; each row's figures match the plain formulas and are
    bitwise the same whether the row comes alone or in a shard of any size."""
    from sparkcnn.schemas.tensors import summarize

    rng = np.random.default_rng(1)
    data = (np.maximum(rng.standard_normal((37, *shape)), -0.2) * 40).astype(dtype)
    data[3] = 0
    whole = summarize(data)
    alone = [summarize(data[i: i + 1]) for i in range(len(data))]
    for stat, values in whole.items():
        assert values.dtype == np.float64 and values.shape == (37,)
        assert np.array_equal(values, np.concatenate([a[stat] for a in alone])), stat
    flat = data.reshape(37, -1).astype(np.float64)
    np.testing.assert_allclose(whole["mean"], flat.mean(axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(whole["l2"], np.sqrt((flat ** 2).sum(axis=1)), rtol=1e-12)
    np.testing.assert_allclose(whole["std"], flat.std(axis=1), rtol=1e-6, atol=1e-6)
    assert np.array_equal(whole["zeros"], (flat == 0).mean(axis=1)) and whole["zeros"][3] == 1.0
    assert np.array_equal(whole["min"], flat.min(axis=1)) and np.array_equal(whole["max"], flat.max(axis=1))
    assert all(v.shape == (0,) for v in summarize(data[:0]).values())
