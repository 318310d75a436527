"""The tensor columns of a network's per-image tables."""
from __future__ import annotations

import math

from sparkcnn.schemas.tables import DEFAULT_CACHE
from sparkcnn.schemas.tensors import SparseTensorSpec, TensorSpec

SPARSE_DX = ("relu", "max_pool")


def tensor_specs(net, cache: dict | None = None) -> dict[str, tuple]:
    """Tensor columns of each per-image table under a cache policy: how each ReLU's mask is kept
    (bitmask, a byte per element, or not at all), whether each max-pool's argmax is kept, and
    whether the mostly-zero input gradients of ReLU and max-pool layers are stored sparse."""
    cache = {**DEFAULT_CACHE, **(cache or {})}
    f32 = "float32"
    classes = (net.classes,)
    pixels = (TensorSpec("pixels", "uint8", net.image),)
    specs = {"images": pixels, "batches": pixels, "loss": (TensorSpec("probs", f32, classes),
                                                          TensorSpec("dx", f32, classes)),
             "evaluate": (TensorSpec("probs", f32, classes),)}
    for layer in net.layers:
        kept = ()
        if layer.type == "relu":
            kept = {"bitmask": (TensorSpec("mask", "uint8", ((math.prod(layer.out_shape) + 7) // 8,)),),
                    "bytes": (TensorSpec("mask", "uint8", layer.out_shape),), "recompute": ()}[cache["relu_mask"]]
        elif layer.type == "max_pool" and cache["pool_argmax"] == "int8":
            kept = (TensorSpec("argmax", "int8", layer.out_shape),)
        specs[layer.forward_stage] = (TensorSpec("out", f32, layer.out_shape), *kept)
        if net.input_grad(layer):
            sparse = cache["sparse_gradients"] and layer.type in SPARSE_DX
            specs[layer.backward_stage] = ((SparseTensorSpec if sparse else TensorSpec)("dx", f32, layer.in_shape),)
    return specs
