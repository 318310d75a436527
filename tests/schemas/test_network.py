"""The network as data: resolving the declared layers, refusing impossible stacks, and what is derived."""
from __future__ import annotations

import pytest

from pipeline import config
from pipeline.config import ConfigError
from schemas.network import DEFAULT_LAYERS, Network, NetworkError, resolve_layers

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
    assert resolved[0] == {"name": "conv1", "type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": 1}
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
