"""The residual network's training equals PyTorch's on the same graph: sync = false against gradient
accumulation over the same shards (each shard's forward a momentum step of the running statistics),
sync = true against the whole batch."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sparkcnn.pipeline.bench.torch_graph import module_params, torch_model
from sparkcnn.pipeline.spark import chain
from sparkcnn.schemas.network import Network
from sparkcnn.schemas.tables import arrays_to_table, table_schema, table_to_arrays
from sparkcnn.schemas.tensors import spec_of
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext, normalize
from tests.schemas.test_network import RESIDUAL

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("sync", [False, True])
def test_three_iterations_of_a_residual_network_equal_pytorch(sync):
    net = Network([dict(layer, sync=sync) if layer["type"] == "batch_norm" else layer for layer in RESIDUAL], (8, 8, 3), 10)
    rng = np.random.default_rng(7)
    params, velocity = update.init_params(net, 0), update.zero_velocity(net)
    model = torch_model(net, params).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    batch = 12
    shard = batch if sync else 4  # synced: PyTorch on the whole batch
    for t in range(3):
        x = rng.standard_normal((batch, 8, 8, 3)).astype(np.float32)
        labels = rng.integers(0, 10, batch)
        ctx = StageContext(net, params, normalizer=batch)
        grads, stats = whole_network.shard_gradients(x, labels, ctx, (t, np.arange(batch)), shard)
        stepped = update.step_running_stats(net, params, stats)
        params, velocity = update.sgd_step(params, velocity, grads, 0.1, 0.9, 5e-4, True)
        params.update(stepped)
        opt.zero_grad()
        for start in range(0, batch, shard):
            xs = torch.from_numpy(np.ascontiguousarray(x[start:start + shard].transpose(0, 3, 1, 2)))
            scores = model(xs)
            loss = torch.nn.functional.cross_entropy(scores, torch.from_numpy(labels[start:start + shard]),
                                                     reduction="sum") / batch
            loss.backward()
        opt.step()
    expected = module_params(model, net)
    assert sorted(expected) == sorted(params)
    for name, want in expected.items():
        assert np.linalg.norm(params[name] - want) <= 1e-4 * np.linalg.norm(want), name
    scores = whole_network.forward(x, labels, StageContext(net, params))[1][-1]["probs"]
    with torch.no_grad():
        probs = torch.softmax(model.eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))), 1)
    np.testing.assert_allclose(scores, probs.numpy(), atol=1e-5)


def shard_tables(net, pixels: np.ndarray, labels: np.ndarray, shard: int) -> list:
    """Training batch shards as the pipeline stores them (iteration 0, epoch 0)."""
    schema = table_schema(net, "batches", summaries=False)
    tables = []
    for s, start in enumerate(range(0, labels.size, shard)):
        n = min(shard, labels.size - start)
        columns = {"image_id": np.arange(start, start + n), "label": labels[start:start + n].astype(np.int8),
                   "epoch": np.zeros(n, np.int32), "iteration": np.zeros(n, np.int32),
                   "shard": np.full(n, s, np.int32), "position": np.arange(n, dtype=np.int32)}
        arrays = [pa.array(columns[f.name], f.type) for f in schema if f.name != "pixels"]
        arrays.append(spec_of(schema.field("pixels")).encode(pixels[start:start + n]))
        tables.append(pa.Table.from_arrays(arrays, schema=schema))
    return tables


def test_synced_stage_functions_over_shards_equal_the_whole_batch():
    """The stage functions of a synced network run shard by shard with its statistics stages as barriers
    (as staged mode runs them) give the whole batch's gradients and running statistics."""
    layers = [dict(layer, sync=True) if layer["type"] == "batch_norm" else layer for layer in RESIDUAL]
    net = Network(layers, (8, 8, 3), 10)
    rng = np.random.default_rng(3)
    pixels, labels = rng.integers(0, 256, (12, 8, 8, 3), dtype=np.uint8), rng.integers(0, 10, 12)
    mean, std = np.array([0.5, 0.5, 0.5]), np.array([0.25, 0.25, 0.25])
    params = update.init_params(net, 0)
    ctx = StageContext(net, params, mean, std, normalizer=12, hyper={"learning_rate": 0.1, "momentum": 0.9,
                                                                      "weight_decay": 0.0, "iteration": 1})
    produced = [{"batches": {"out": t}} for t in shard_tables(net, pixels, labels, 5)]
    for stage in net.iteration_stages[:-1]:
        gathered = {(i.source, i.output) for i in net.stage_def(stage).inputs.values() if i.many}
        views = [{**p, **{s: {o: [q[s][o] for q in produced]} for s, o in gathered}} for p in produced]
        results = [chain.run_stage(stage, v, ctx) for v in views]
        for p, r in zip(produced, results):
            p[stage] = r.tables
    inputs = {s: [p[s][o] for p in produced] for s, o in net.update_reads.items()}
    velocity = arrays_to_table(update.zero_velocity(net), "velocity", 0)
    got = table_to_arrays(update.update_stage({**inputs, "velocity": velocity}, ctx.at("update")).tables["params"])
    expected_grads, stats = whole_network.shard_gradients(normalize(pixels, mean, std), labels, ctx, (0, np.arange(12)), 12)
    expected, _ = update.sgd_step(params, update.zero_velocity(net), expected_grads, 0.1, 0.9, 0.0)
    expected.update(update.step_running_stats(net, params, stats))
    for name, want in expected.items():
        np.testing.assert_allclose(got[name], want, rtol=1e-5, atol=1e-7, err_msg=name)
