"""The residual network's training equals PyTorch's on the same graph: sync = false against gradient
accumulation over the same shards (each shard's forward a momentum step of the running statistics)."""
from __future__ import annotations

import numpy as np
import pytest

from sparkcnn.pipeline.bench.torch_graph import module_params, torch_model
from sparkcnn.schemas.network import Network
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext
from tests.schemas.test_network import RESIDUAL

torch = pytest.importorskip("torch")


def test_three_iterations_of_a_residual_network_equal_pytorch_with_accumulated_shards():
    net = Network(RESIDUAL, (8, 8, 3), 10)
    rng = np.random.default_rng(7)
    params, velocity = update.init_params(net, 0), update.zero_velocity(net)
    model = torch_model(net, params).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    batch, shard = 12, 4
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
