"""ONNX export of a graph (several inputs and readers, batch norm in its inference form, add, global
average pooling, convolutions without bias) agrees with sparkcnn's forward pass under onnxruntime."""
from __future__ import annotations

import numpy as np
import pytest

from sparkcnn.pipeline.deploy import onnx_export
from sparkcnn.schemas.network import Network
from sparkcnn.stages import update, whole_network
from sparkcnn.stages.tabular import StageContext, normalize
from tests.schemas.test_network import RESIDUAL


def test_a_residual_network_exports_and_onnxruntime_agrees():
    onnxruntime = pytest.importorskip("onnxruntime")
    net = Network(RESIDUAL, (8, 8, 3), 10)
    rng = np.random.default_rng(9)
    params = update.init_params(net, 0)
    for name, shape in net.state_shapes.items():  # running statistics far from their initial values
        params[name] = (rng.uniform(0.5, 2.0, shape) if name.endswith("var") else rng.normal(0, 0.5, shape)
                        ).astype(np.float32)
    mean, std = np.array([0.5, 0.4, 0.3]), np.array([0.25, 0.2, 0.3])
    model = onnx_export.build(net, params, mean, std, [str(i) for i in range(10)])
    ops = {node.op_type for node in model.graph.node}
    assert {"BatchNormalization", "GlobalAveragePool", "Add"} <= ops
    assert all(len(node.input) == 2 for node in model.graph.node if node.op_type == "Conv")
    pixels = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {onnx_export.INPUT: pixels})
    ctx = StageContext(net, params, mean, std)
    _, caches = whole_network.forward(normalize(pixels, mean, std), np.zeros(5, np.int64), ctx)
    np.testing.assert_allclose(got, caches[-1]["probs"], atol=1e-5)
