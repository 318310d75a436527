"""A trained network as a standard ONNX graph: uint8 NHWC images in (the run's normalisation folded in),
class probabilities out. Built from the network's layers, so every layer stack the config allows exports."""
from __future__ import annotations

import json

import numpy as np

from sparkcnn.stages.tabular import normalization

OPSET = 17
INPUT, OUTPUT = "images", "probabilities"


class _Graph:
    """Nodes and initialisers added in order; tracks whether the running tensor is NHWC or NCHW."""

    def __init__(self):
        from onnx import helper

        self.helper = helper
        self.nodes, self.initializers = [], []
        self.layout = "NHWC"
        self.count = 0

    def constant(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attributes) -> str:
        self.count += 1
        out = f"{name}_{op.lower()}_{self.count}"
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=f"{name}/{op}", **attributes))
        return out

    def to(self, layout: str, x: str, name: str) -> str:
        """The running tensor in `layout` (a Transpose when it is in the other one)."""
        if self.layout == layout:
            return x
        self.layout = layout
        return self.node("Transpose", [x], name, perm=[0, 3, 1, 2] if layout == "NCHW" else [0, 2, 3, 1])


def build(net, params: dict[str, np.ndarray], mean: np.ndarray, std: np.ndarray, class_names: list[str],
          description: str = ""):
    """The ONNX model of `net` with `params`: input `images` uint8 (N, H, W, C), output `probabilities`
    float32 (N, classes), the same arithmetic as sparkcnn.stages.tabular.normalize (its std floor included) and the layers' forward passes."""
    from onnx import TensorProto, checker, helper

    g = _Graph()
    h, w, c = net.image
    scale, shift = normalization(mean, std)
    x = g.node("Cast", [INPUT], "input", to=TensorProto.FLOAT)
    x = g.node("Mul", [x, g.constant("input.scale", scale)], "input")
    x = g.node("Sub", [x, g.constant("input.shift", shift)], "input")
    outputs = {}  # by layer: its output tensor and that tensor's layout
    for layer in net.layers:
        name = layer.name
        if layer.inputs:
            x, g.layout = outputs[layer.inputs[0]]
        if layer.type == "conv":
            k = layer["kernel"]
            x = g.to("NCHW", x, name)
            bias = [g.constant(f"{name}.b", params[f"{name}.b"])] if layer["bias"] else []
            x = g.node("Conv", [x, g.constant(f"{name}.w", params[f"{name}.w"]), *bias],
                       name, kernel_shape=[k, k], strides=[layer["stride"]] * 2, pads=[layer["padding"]] * 4)
        elif layer.type in ("max_pool", "avg_pool"):
            x = g.to("NCHW", x, name)
            x = g.node("MaxPool" if layer.type == "max_pool" else "AveragePool", [x], name,
                       kernel_shape=[layer["size"]] * 2, strides=[layer["stride"]] * 2)
        elif layer.type == "relu":
            x = g.node("Relu", [x], name)
        elif layer.type == "fc":
            if len(layer.in_shape) == 3:
                x = g.node("Flatten", [g.to("NHWC", x, name)], name, axis=1)  # fc flattens in NHWC order
            x = g.node("MatMul", [x, g.constant(f"{name}.w", params[f"{name}.w"])], name)
            x = g.node("Add", [x, g.constant(f"{name}.b", params[f"{name}.b"])], name)
        elif layer.type == "batch_norm":  # inference form: the running statistics
            x = g.to("NCHW", x, name) if len(layer.in_shape) == 3 else x
            x = g.node("BatchNormalization", [x, *(g.constant(f"{name}.{p}", params[f"{name}.{p}"]) for p in
                                                  ("gamma", "beta", "running_mean", "running_var"))],
                       name, epsilon=layer["eps"])
        elif layer.type == "add":
            terms = []
            for source in layer.inputs:
                y, g.layout = outputs[source]
                terms.append(g.to("NCHW", y, name) if len(layer.in_shape) == 3 else y)
            x = terms[0]
            for y in terms[1:]:
                x = g.node("Add", [x, y], name)
        elif layer.type == "global_avg_pool":
            x = g.node("Flatten", [g.node("GlobalAveragePool", [g.to("NCHW", x, name)], name)], name, axis=1)
            g.layout = "NHWC"  # (N, C): no spatial axes left
        elif layer.type != "dropout":  # dropout: identity at inference
            raise ValueError(f"layer {name}: type {layer.type} has no ONNX form")
        outputs[name] = x, g.layout
    x, g.layout = outputs[net.output.name]
    if len(net.output.out_shape) == 3:
        x = g.node("Flatten", [g.to("NHWC", x, "output")], "output", axis=1)
    g.nodes.append(helper.make_node("Softmax", [x], [OUTPUT], name="output/Softmax", axis=1))
    graph = helper.make_graph(
        g.nodes, "sparkcnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", h, w, c])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", net.classes])],
        g.initializers)
    model = helper.make_model(graph, producer_name="sparkcnn", opset_imports=[helper.make_opsetid("", OPSET)],
                              doc_string=description)
    model.ir_version = 8
    helper.set_model_props(model, {"class_names": json.dumps(class_names), "input": "uint8 NHWC, RGB or grayscale as "
                                   "trained; normalisation inside the graph", "output": "class probabilities"})
    checker.check_model(model)
    return model
