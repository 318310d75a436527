"""The bench runs every mode in one process and writes its figures as JSON and a PNG chart."""
import json
import struct

import pytest

from sparkcnn.pipeline.cli.main import main

pytestmark = pytest.mark.slow


def test_bench_writes_table_json_and_chart(spark, tmp_path, capsys):
    out = tmp_path / "bench"
    stale = out / "runs" / "staged-200" / "left-from-an-earlier-bench"
    stale.parent.mkdir(parents=True)
    stale.write_text("")
    assert main(["bench", "--images", "200", "--scaling", "100,200,9999", "--repeat", "1", "--no-torch",
                 "--out", str(out), "--epoch-images", "300,60000"]) == 0
    printed = capsys.readouterr().out
    assert not stale.exists()
    assert "staged / memory:" in printed and "seconds per stage and iteration" in printed
    assert "sizes [9999, 60000] skipped" in printed
    (epoch,) = json.loads((out / "bench.json").read_text())["epoch_memory"]
    assert epoch["images"] == 300 and epoch["iterations"] == 1 and epoch["driver_peak_mb"] > 0
    result = json.loads((out / "bench.json").read_text())
    names = [r["name"] for r in result["rows"]]
    assert names == ["numpy (1 process)", "staged", "staged, job per stage", "memory", "fused"]
    rows = {r["name"]: r for r in result["rows"]}
    assert all(r["total"] > 0 and r["images"] == 200 and 0 < r["low"] <= r["high"] for r in result["rows"])
    assert rows["numpy (1 process)"]["threads"] == "1 (1 process)"
    assert rows["fused"]["threads"] == "1 each, 2 tasks"
    kernels = result["kernels"]
    assert kernels["threads"] == 1 and kernels["repeat"] == 3 and kernels["peak_gflops"] > 0
    assert [r["layer"] for r in kernels["layers"]] == ["conv1", "relu1", "pool1", "fc1"]
    assert "BLAS thread as in a task" in printed and "matrix-product peak" in printed
    assert rows["staged"]["bytes_written"] > 50 * rows["memory"]["bytes_written"] > 0
    assert result["ratios"]["staged_to_memory"] == pytest.approx(rows["staged"]["total"] / rows["memory"]["total"])
    assert sorted((r["name"], r["images"]) for r in result["scaling"]) == sorted(
        (m, n) for m in ("staged", "memory", "fused") for n in (100, 200))
    staged = rows["staged"]
    assert staged["fixed_cost"] == staged["stages"]["loss"] and rows["memory"]["fixed_cost"] > 0
    assert rows["fused"]["fixed_cost"] is None and rows["fused"]["io_ms_per_mb"] is None
    assert staged["io_ms_per_mb"] > 0 and rows["memory"]["io_ms_per_mb"] is None
    jobs = rows["staged, job per stage"]
    assert jobs["fixed_cost"] == jobs["stages"]["loss"] and jobs["bytes_written"] == staged["bytes_written"]
    for row in (staged, jobs):
        assert set(row["phases"]) == set(row["stages"])
        for stage, ph in row["phases"].items():
            assert ph["seconds"] == pytest.approx(row["stages"][stage])
            assert min(ph[k] for k in ("plan", "launch", "read", "compute", "write", "collect")) >= 0
            assert (ph["launch"] > 0) == (row is jobs or stage in ("conv1_fwd", "update")) and ph["mb_read"] > 0
            if row is jobs:
                assert ph["plan"] + ph["launch"] + ph["collect"] < ph["seconds"]
    assert "where a stage's time goes (staged" in printed and "fixed cost of a stage" in printed
    by_size = result["ratios"]["scaling"]["staged"]
    assert by_size["200"]["per_image_vs_bench_size"] == 1.0 and by_size["100"]["x_pytorch"] is None
    assert by_size["100"]["per_image_vs_bench_size"] == pytest.approx(
        (by_size["100"]["seconds"] / 100) / (staged["total"] / 200))
    assert by_size["100"]["io_ms_per_mb"] > 0 and result["ratios"]["scaling"]["fused"]["100"]["io_ms_per_mb"] is None
    assert "where a stage's time goes (staged, 100 images" in printed
    scaling = printed.split("scaling (seconds per iteration")[1]
    assert scaling.splitlines()[1].split() == ["images", "pytorch", "s", "staged", "s", "x", "/image", "ms/MB",
                                               "memory", "s", "x", "/image", "fused", "s", "x", "/image"]
    policies = {r["name"]: r["bytes_written"] for r in result["cache_policies"]}
    assert policies["relu mask as bytes"] > policies["default (bitmask, int8)"] > policies["all recomputed + sparse"]
    png = (out / "bench.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert width > 600 and height > 300


def test_the_pytorch_row_computes_the_same_network():
    """bench's PyTorch model is built from the same layer list and starts from the same parameters."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from sparkcnn.pipeline.bench.torch_graph import torch_model
    from sparkcnn.schemas.network import Network
    from sparkcnn.stages import update, whole_network
    from sparkcnn.stages.tabular import StageContext
    from tests.schemas.test_network import CIFAR, THREE_CONV

    net = Network(THREE_CONV, *CIFAR)
    params = update.init_params(net, 0)
    x = np.random.default_rng(0).standard_normal((4, 32, 32, 3)).astype(np.float32)
    probs = whole_network.forward(x, np.zeros(4, np.int64), StageContext(net, params))[1][-1]["probs"]
    with torch.no_grad():
        scores = torch_model(net, params).eval()(torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    np.testing.assert_allclose(torch.softmax(scores, dim=1).numpy(), probs, atol=1e-5)


def test_kernel_table_counts_every_layer_and_the_peak():
    """Per-layer FLOPs as the layers' arithmetic has them; the table has a row per layer and per type."""
    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.bench.kernel_speed import kernel_table, layer_flops, measure
    from sparkcnn.pipeline.training.run import network_for

    net = network_for(config.load("conf/quick.toml"))
    conv2 = net.layers[3]
    assert layer_flops(conv2, 2, True) == (2.0 * 2 * 15 * 15 * 32 * 32 * 25, 4.0 * 2 * 15 * 15 * 32 * 32 * 25)
    assert layer_flops(net.layers[0], 2, False)[1] == layer_flops(net.layers[0], 2, False)[0]
    kernels = measure(net, 4, 3)
    assert kernels["threads"] == 1 and kernels["peak_gflops"] > 0
    assert [r["layer"] for r in kernels["layers"]] == [layer.name for layer in net.layers]
    assert all(r["forward"]["min"] <= r["forward"]["median"] <= r["forward"]["max"] for r in kernels["layers"])
    text = kernel_table(kernels["layers"], kernels["peak_gflops"])
    assert all(f"\n{kind:<10}" in text for kind in ("conv", "relu", "max_pool", "avg_pool", "fc"))
    assert "matrix-product peak" in text


def test_kernel_timings_follow_a_residual_graph():
    """A layer reading a layer other than the one before it (a shortcut, an add) is timed on its own inputs,
    batch_norm in training mode (finite timings, every layer once)."""
    import numpy as np

    from sparkcnn.pipeline.bench.kernel_speed import kernel_table, layer_flops, measure
    from sparkcnn.schemas.network import Network
    from tests.schemas.test_network import RESIDUAL

    net = Network(RESIDUAL, (8, 8, 3), 10)
    rows = measure(net, 4, 1)["layers"]
    assert [r["layer"] for r in rows] == [layer.name for layer in net.layers]
    assert {r["type"] for r in rows} >= {"add", "batch_norm", "global_avg_pool"}
    add = next(layer for layer in net.layers if layer.type == "add")
    assert layer_flops(add, 4, True) == (4.0 * np.prod(add.out_shape), 0.0)  # backward hands dout on
    table = kernel_table(rows, 100.0)
    assert [line.split()[4] for line in table.splitlines() if line.startswith("add ")] == ["-"]


def test_three_iterations_of_the_quick_network_match_pytorch():
    """The numpy kernels trained 3 iterations from the same start as PyTorch: every parameter within 1e-4
    (relative to its largest value)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    from sparkcnn.pipeline import config
    from sparkcnn.pipeline.bench.torch_graph import torch_model
    from sparkcnn.pipeline.training.run import network_for
    from sparkcnn.stages import update, whole_network
    from sparkcnn.stages.tabular import StageContext

    cfg = config.load("conf/quick.toml")
    net = network_for(cfg)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 32, 32, 3)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    params = update.init_params(net, 0)
    model = torch_model(net, params)
    t = cfg.train
    opt = torch.optim.SGD(model.parameters(), lr=t.learning_rate, momentum=t.momentum, weight_decay=t.weight_decay)
    velocity = {n: np.zeros_like(p) for n, p in params.items()}
    xb = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    for _ in range(3):
        grads = whole_network.gradients(x, labels, StageContext(net, params, normalizer=32))[1]
        params, velocity = update.sgd_step(params, velocity, grads, t.learning_rate, t.momentum, t.weight_decay)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), torch.from_numpy(labels)).backward()
        opt.step()
    trained = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for layer, module in zip(net.trained_layers, trained):
        w = module.weight.detach().numpy()
        for name, theirs in (("w", w.T if layer.type == "fc" else w), ("b", module.bias.detach().numpy())):
            mine = params[f"{layer.name}.{name}"]
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())
