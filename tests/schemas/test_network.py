"""The network as data: resolving the declared layers, refusing impossible stacks, and what is derived."""
from __future__ import annotations

import math

import pytest

from sparkcnn.pipeline import config
from sparkcnn.pipeline.errors import ConfigError
from sparkcnn.schemas.layers import DEFAULT_LAYERS, resolve_layers
from sparkcnn.schemas.network import Network, NetworkError
from sparkcnn.stages import batch_norm

CIFAR = ((32, 32, 3), 10)
THREE_CONV = [
    {"type": "conv", "filters": 8, "kernel": 3, "padding": 1}, {"type": "relu"}, {"type": "max_pool"},
    {"type": "conv", "filters": 8, "kernel": 3, "padding": 1, "name": "middle"}, {"type": "relu"},
    {"type": "avg_pool", "size": 2}, {"type": "conv", "filters": 16, "kernel": 3}, {"type": "relu"},
    {"type": "max_pool", "size": 2, "stride": 1}, {"type": "dropout", "rate": 0.25},
    {"type": "fc", "units": 32}, {"type": "relu"}, {"type": "fc", "units": 10},
]


def test_layers_are_named_by_type_and_count_with_every_key_explicit():
    resolved = resolve_layers(THREE_CONV)
    assert [layer["name"] for layer in resolved] == [
        "conv1", "relu1", "pool1", "middle", "relu2", "pool2", "conv3", "relu3", "pool3", "drop1", "fc1", "relu4", "fc2"]
    assert resolved[0] == {"name": "conv1", "type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": 1,
                           "bias": True}
    assert resolved[2] == {"name": "pool1", "type": "max_pool", "size": 2, "stride": 2}
    assert resolved[8]["stride"] == 1 and resolved[9]["rate"] == 0.25
    assert resolve_layers(resolved) == resolved


def test_config_json_records_the_resolved_list_and_a_list_replaces_the_default(tmp_path):
    assert config.Config().model.layers == [dict(layer) for layer in resolve_layers(DEFAULT_LAYERS)]
    path = tmp_path / "net.toml"
    path.write_text('[[model.layers]]\ntype = "fc"\nunits = 10\n')
    cfg = config.load(path)
    assert cfg.model.layers == [{"name": "fc1", "type": "fc", "units": 10}]
    assert config.from_dict(cfg.to_dict()) == cfg


def test_stages_parameters_and_shapes_come_from_the_list():
    net = Network(THREE_CONV, *CIFAR)
    assert net.iteration_stages == (
        "conv1_fwd", "relu1_fwd", "pool1_fwd", "middle_fwd", "relu2_fwd", "pool2_fwd", "conv3_fwd", "relu3_fwd",
        "pool3_fwd", "drop1_fwd", "fc1_fwd", "relu4_fwd", "fc2_fwd", "loss", "fc2_bwd", "relu4_bwd", "fc1_bwd",
        "drop1_bwd", "pool3_bwd", "relu3_bwd", "conv3_bwd", "pool2_bwd", "relu2_bwd", "middle_bwd", "pool1_bwd",
        "relu1_bwd", "conv1_bwd", "update")
    assert net.gradient_stages == ("fc2_bwd", "fc1_bwd", "conv3_bwd", "middle_bwd", "conv1_bwd")
    assert net.param_shapes == {
        "conv1.w": (8, 3, 3, 3), "conv1.b": (8,), "middle.w": (8, 8, 3, 3), "middle.b": (8,),
        "conv3.w": (16, 8, 3, 3), "conv3.b": (16,), "fc1.w": (5 * 5 * 16, 32), "fc1.b": (32,),
        "fc2.w": (32, 10), "fc2.b": (10,)}
    assert [layer.out_shape for layer in net.layers[:9]] == [
        (32, 32, 8), (32, 32, 8), (16, 16, 8), (16, 16, 8), (16, 16, 8), (8, 8, 8), (6, 6, 16), (6, 6, 16), (5, 5, 16)]
    specs = net.tensor_specs()
    assert "conv1_bwd" not in specs and specs["middle_bwd"][0].shape == (16, 16, 8)
    defs = net.stage_defs()
    assert defs["conv1_fwd"].inputs["x"].source == "batches" and defs["middle_fwd"].inputs["x"].source == "pool1_fwd"
    assert set(defs["relu2_bwd"].inputs) == {"dout", "saved"} and defs["relu2_bwd"].inputs["dout"].source == "pool2_bwd"
    assert defs["fc2_bwd"].inputs["dout"].source == "loss" and defs["loss"].inputs["x"].source == "fc2_fwd"
    assert set(defs["update"].inputs) == {*net.gradient_stages, "velocity"}
    recompute = net.stage_defs({"pool_argmax": "recompute"})["pool1_bwd"].inputs
    assert set(recompute) == {"dout", "x"} and recompute["x"].source == "relu1_fwd"


def test_a_network_that_starts_without_parameters_needs_no_backward_before_its_first_trained_layer():
    net = Network([{"type": "max_pool"}, {"type": "fc", "units": 10}], *CIFAR)
    assert net.iteration_stages == ("pool1_fwd", "fc1_fwd", "loss", "fc1_bwd", "update")
    assert net.per_image_stages == ("pool1_fwd", "fc1_fwd", "loss")


@pytest.mark.parametrize("layers,message", [
    ([{"type": "conv", "filters": 4, "kernel": 40}, {"type": "fc", "units": 10}],
     "layer conv1: a 40x40 kernel does not fit its 32x32 input"),
    ([{"type": "fc", "units": 20}, {"type": "conv", "filters": 4, "kernel": 3}, {"type": "fc", "units": 10}],
     "layer conv1: a conv layer needs an image-shaped input"),
    ([{"type": "fc", "units": 0}], r"layer fc1 \(model.layers\[0\], fc\): units must be at least 1"),
    ([{"type": "conv", "filters": 4, "kernel": 3}, {"type": "fc", "units": 7}],
     "layer fc1: the last layer gives \\(7,\\) per image, but the loss needs 10 scores"),
    ([{"type": "conv", "filters": 4, "kernel": 3}], "layer conv1: the last layer gives"),
    ([{"type": "pool"}], r"model.layers\[0\]: unknown layer type 'pool'"),
    ([{"type": "fc", "units": 10, "unit": 3}], "layer fc1 .*unknown keys unit"),
    ([{"type": "conv", "kernel": 3}, {"type": "fc", "units": 10}], "layer conv1 .*missing filters"),
    ([{"type": "fc", "units": 10, "name": "a"}, {"type": "fc", "units": 10, "name": "a"}], "repeated: a"),
    ([{"type": "fc", "units": 10, "name": "Fc"}, {"type": "fc", "units": 10, "name": "fc"}], "repeated: Fc, fc"),
    ([{"type": "dropout", "rate": 1.0}, {"type": "fc", "units": 10}], "rate must be in"),
    ([{"type": "max_pool", "size": 12}, {"type": "fc", "units": 10}], "int8"),
    ([], "non-empty list"),
])
def test_impossible_stacks_are_refused_naming_the_layer(layers, message):
    with pytest.raises(NetworkError, match=message):
        Network(layers, *CIFAR)


def test_a_bad_layer_in_a_config_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="layer fc1 .*units must be an integer"):
        config.load(overrides=['model.layers=[{type="fc", units="ten"}]'])


def block(name: str, filters: int, stride: int, shortcut: str, project: bool) -> list[dict]:
    """A basic residual block (conv-BN-ReLU-conv-BN, + shortcut, ReLU), the shortcut projected by a
    1x1 conv + BN where the shape changes."""
    conv = {"type": "conv", "filters": filters, "kernel": 3, "padding": 1, "bias": False}
    layers = [{**conv, "stride": stride, "name": f"{name}_conv1"}, {"type": "batch_norm", "name": f"{name}_bn1"},
              {"type": "relu", "name": f"{name}_relu1"}, {**conv, "name": f"{name}_conv2"},
              {"type": "batch_norm", "name": f"{name}_bn2"}]
    if project:
        layers += [{"type": "conv", "filters": filters, "kernel": 1, "stride": stride, "bias": False,
                    "input": shortcut, "name": f"{name}_proj"}, {"type": "batch_norm", "name": f"{name}_proj_bn"}]
        shortcut = f"{name}_proj_bn"
    return [*layers, {"type": "add", "inputs": [f"{name}_bn2", shortcut], "name": f"{name}_add"},
            {"type": "relu", "name": f"{name}_out"}]


# a small residual network: an identity block (stem_relu read by two layers), a projection block, and
# batch norm after a conv and after an fc
RESIDUAL = [{"type": "conv", "filters": 4, "kernel": 3, "padding": 1, "bias": False, "name": "stem"},
            {"type": "batch_norm", "name": "stem_bn"}, {"type": "relu", "name": "stem_relu"},
            *block("b1", 4, 1, "stem_relu", False), *block("b2", 8, 2, "b1_out", True),
            {"type": "global_avg_pool", "name": "gap"}, {"type": "fc", "units": 6, "name": "fc1"},
            {"type": "batch_norm", "name": "fc1_bn"}, {"type": "relu", "name": "fc1_relu"},
            {"type": "fc", "units": 10, "name": "fc2"}]


def test_a_residual_graph_runs_in_topological_order_and_sums_its_readers_gradients():
    net = Network(RESIDUAL, (8, 8, 3), 10)
    assert [layer.name for layer in net.readers(net.layer("stem_relu_fwd"))] == ["b1_conv1", "b1_add"]
    assert net.layer("b2_add_fwd").inputs == ("b2_bn2", "b2_proj_bn")
    assert net.layer("b2_proj_fwd").in_shape == (8, 8, 4) and net.layer("gap_fwd").out_shape == (8,)
    defs = net.stage_defs()
    assert set(defs["b1_add_fwd"].inputs) == {"x0", "x1"} and defs["b2_proj_fwd"].inputs["x"].source == "b1_out_fwd"
    dout = defs["stem_relu_bwd"].inputs
    assert (dout["dout"].source, dout["dout_1"].source) == ("b1_conv1_bwd", "b1_add_bwd")
    assert net.param_shapes["stem.w"] == (4, 3, 3, 3) and "stem.b" not in net.param_shapes
    assert net.state_shapes["fc1_bn.running_var"] == (6,) and net.param_shapes["b2_bn1.gamma"] == (8,)
    assert set(defs["update"].inputs) == {*net.gradient_stages, *net.statistics_stages, "velocity"}
    assert defs["update"].inputs["stem_bn_fwd"].output == "stats"
    stages = net.iteration_stages
    assert all(stages.index(layer.forward_stage) > stages.index(f"{n}_fwd") for layer in net.layers for n in layer.inputs)
    assert "b2_add (add, 4x4x8 <- b2_bn2+b2_proj_bn)" in net.describe()


def test_a_layer_may_read_one_declared_later_and_runs_after_it():
    net = Network([{"type": "fc", "units": 4, "name": "a"}, {"type": "relu", "name": "b", "input": "c"},
                   {"type": "fc", "units": 4, "name": "c", "input": "a"}, {"type": "fc", "units": 10, "input": "b"}],
                  *CIFAR)
    assert [layer.name for layer in net.layers] == ["a", "c", "b", "fc3"]
    assert net.backward_stages == ("fc3_bwd", "b_bwd", "c_bwd", "a_bwd")


@pytest.mark.parametrize("layers, message", [
    ([{"type": "fc", "units": 10, "input": "nowhere"}], "layer fc1 .*input 'nowhere' is not a layer"),
    ([{"type": "fc", "units": 10, "name": "a", "input": "a"}], "layer a .*its own input"),
    ([{"type": "relu"}, {"type": "relu", "input": "relu3"}, {"type": "relu", "input": "relu2"},
      {"type": "fc", "units": 10}], "layer relu2: its inputs form a cycle"),
    ([{"type": "conv", "filters": 4, "kernel": 3}, {"type": "conv", "filters": 4, "kernel": 1, "name": "c2"},
      {"type": "add", "inputs": ["conv1", "c2", "conv1"]}, {"type": "fc", "units": 10}], "layer add1 .*named twice"),
    ([{"type": "conv", "filters": 4, "kernel": 3}, {"type": "conv", "filters": 4, "kernel": 3, "name": "c2"},
      {"type": "add", "inputs": ["conv1", "c2"]}, {"type": "fc", "units": 10}],
     r"layer add1: an add needs inputs of one shape, got conv1 \(30, 30, 4\), c2 \(28, 28, 4\)"),
    ([{"type": "fc", "units": 10}, {"type": "add", "inputs": ["fc1"]}], "layer add1 .*two or more inputs"),
    ([{"type": "fc", "units": 10}, {"type": "fc", "units": 10}, {"type": "relu", "inputs": ["fc1", "fc2"]}],
     "layer relu1 .*reads one input"),
    ([{"type": "conv", "filters": 4, "kernel": 3}, {"type": "relu"}, {"type": "fc", "units": 10, "input": "conv1"}],
     "layer relu1: no layer reads its output"),
    ([{"type": "batch_norm", "sync": 1}, {"type": "fc", "units": 10}], "layer bn1 .*sync must be true or false"),
    ([{"type": "fc", "units": 10, "input": "fc1", "inputs": ["fc1"]}], "give input or inputs, not both"),
])
def test_impossible_graphs_are_refused_naming_the_layer(layers, message):
    with pytest.raises(NetworkError, match=message):
        Network(layers, *CIFAR)


def test_new_keys_at_their_defaults_leave_identities_as_they_were():
    """Fingerprints recorded with the code before graphs, batch norm, conv bias and the new train keys."""
    assert config.Config().fingerprint() == "3d47f2ba8a0d0579"
    assert config.load(config.REPO_CONF / "quick.toml").fingerprint() == "51fab7e8565dc89e"
    explicit = config.load(overrides=['model.layers=[{type="conv", filters=32, kernel=5, padding=2, bias=true}, '
                                      '{type="relu", input="conv1"}, {type="max_pool", size=2}, {type="fc", units=10}]',
                                      "train.nesterov=false", "train.lr_warmup_epochs=0"])
    assert explicit.fingerprint() == "3d47f2ba8a0d0579"
    assert config.load(overrides=["train.nesterov=true"]).fingerprint() != "3d47f2ba8a0d0579"


def test_single_value_shards_are_refused_before_spark_starts():
    net = Network([{"type": "fc", "units": 4}, {"type": "batch_norm"}, {"type": "fc", "units": 10}], *CIFAR)
    batch_norm.check_shard(net, 2)
    with pytest.raises(NetworkError, match="layer bn1: a shard of 1 image"):
        batch_norm.check_shard(net, 1)


@pytest.mark.parametrize("name, blocks, params", [("resnet8", 1, 78042), ("resnet20", 3, 272474)])
def test_the_resnet_configs_build(name, blocks, params):
    cfg = config.load(config.REPO_CONF / f"{name}.toml")
    net = Network(cfg.model.layers, *CIFAR)
    assert sum(math.prod(s) for s in net.param_shapes.values()) == params
    assert len([layer for layer in net.layers if layer.type == "add"]) == 3 * blocks
    assert net.layer("s3b1_proj_fwd").out_shape == (8, 8, 64) and net.output.name == "fc"
    assert cfg.train.nesterov and cfg.train.lr_warmup_epochs == 1 and not cfg.warnings()


def test_a_synced_layer_adds_its_statistics_stages():
    net = Network([{"type": "conv", "filters": 4, "kernel": 3}, {"type": "batch_norm", "sync": True},
                   {"type": "relu"}, {"type": "fc", "units": 10}], *CIFAR)
    assert net.iteration_stages == ("conv1_fwd", "bn1_stats", "bn1_fwd", "relu1_fwd", "fc1_fwd", "loss", "fc1_bwd",
                                    "relu1_bwd", "bn1_grads", "bn1_bwd", "conv1_bwd", "update")
    defs = net.stage_defs()
    assert defs["bn1_fwd"].inputs["stats"].many and defs["bn1_bwd"].inputs["sums"].source == "bn1_grads"
    assert net.gradient_stages == ("fc1_bwd", "bn1_grads", "conv1_bwd") and net.statistics_stages == ("bn1_stats",)
    assert "bn1_stats" not in net.per_image_stages and "bn1_bwd" in net.per_image_stages


def test_stage_definitions_are_derived_once_per_cache_policy_and_not_pickled():
    import pickle

    net = Network(RESIDUAL, (8, 8, 3), 10)
    defs = net.stage_defs()
    assert net.stage_defs() is defs and net.stage_defs({}) is defs
    recompute = net.stage_defs({"relu_mask": "recompute"})
    assert recompute is not defs and recompute["stem_relu_bwd"].inputs["saved"].columns == ("out",)
    assert net.tensor_specs() is net.tensor_specs()
    copy = pickle.loads(pickle.dumps(net))
    assert copy._derived == {} and copy.stage_defs() == defs
