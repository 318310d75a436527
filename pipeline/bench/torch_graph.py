"""The network as a PyTorch module built from the same graph: the bench's and the accuracy script's
PyTorch side, and the yardstick of the equality tests (NCHW tensors, parameters copied both ways)."""
from __future__ import annotations

import numpy as np

from sparkcnn.schemas.network import Network


def torch_model(net: Network, params: dict[str, np.ndarray]):
    """A torch.nn.Module computing the network on NCHW images, with the given parameters and running
    statistics (fc layers flatten in NHWC order and their weights are transposed, as sparkcnn lays them out)."""
    import torch

    def module(layer):
        if layer.type == "conv":
            return torch.nn.Conv2d(layer.in_shape[2], layer["filters"], layer["kernel"], layer["stride"],
                                   layer["padding"], bias=layer["bias"])
        if layer.type == "fc":
            return torch.nn.Linear(layer.param_shapes["w"][0], layer["units"])
        if layer.type == "batch_norm":
            kind = torch.nn.BatchNorm2d if len(layer.in_shape) == 3 else torch.nn.BatchNorm1d
            return kind(layer.in_shape[-1], eps=layer["eps"], momentum=layer["momentum"])
        return {"relu": lambda: torch.nn.ReLU(), "max_pool": lambda: torch.nn.MaxPool2d(layer["size"], layer["stride"]),
                "avg_pool": lambda: torch.nn.AvgPool2d(layer["size"], layer["stride"]),
                "dropout": lambda: torch.nn.Dropout(layer["rate"]), "add": lambda: torch.nn.Identity(),
                "global_avg_pool": lambda: torch.nn.AdaptiveAvgPool2d(1)}[layer.type]()

    class Graph(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = torch.nn.ModuleDict({layer.name: module(layer) for layer in net.layers})

        def forward(self, x):
            outputs = {}
            for layer in net.layers:
                inputs = [outputs[n] for n in layer.inputs] or [x]
                if layer.type == "add":
                    out = inputs[0]
                    for other in inputs[1:]:
                        out = out + other
                elif layer.type == "fc":
                    flat = inputs[0].permute(0, 2, 3, 1).flatten(1) if inputs[0].dim() == 4 else inputs[0]
                    out = self.layers[layer.name](flat)
                elif layer.type == "global_avg_pool":
                    out = self.layers[layer.name](inputs[0]).flatten(1)
                else:
                    out = self.layers[layer.name](inputs[0])
                outputs[layer.name] = out
            return outputs[net.output.name]

    model = Graph()
    load_params(model, net, params)
    return model


TORCH_NAMES = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias", "running_mean": "running_mean",
               "running_var": "running_var"}


def load_params(model, net: Network, params: dict[str, np.ndarray]) -> None:
    """Copy sparkcnn's parameters and running statistics into the module."""
    import torch

    state = model.state_dict()
    with torch.no_grad():
        for name, value in params.items():
            layer, p = name.split(".")
            value = value.T if p == "w" and net.layer(f"{layer}_fwd").type == "fc" else value
            state[f"layers.{layer}.{TORCH_NAMES[p]}"].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def module_params(model, net: Network) -> dict[str, np.ndarray]:
    """The module's parameters and running statistics under sparkcnn's names and layouts."""
    state = model.state_dict()
    found = {}
    for name in (*net.param_shapes, *net.state_shapes):
        layer, p = name.split(".")
        value = state[f"layers.{layer}.{TORCH_NAMES[p]}"].detach().cpu().numpy()
        found[name] = value.T.copy() if p == "w" and net.layer(f"{layer}_fwd").type == "fc" else value.copy()
    return found
