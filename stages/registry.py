"""Every stage function, by what it computes (a layer type, the loss, the update, the whole network) and its role.

A `StageDef` names its function as such a pair; this table is the one place that maps it to code.
"""
from __future__ import annotations

import functools

from sparkcnn.stages import (add, avg_pool, batch_norm, conv, dropout, fc, global_avg_pool, loss, pool, relu, update,
                             whole_network)
from sparkcnn.stages.tabular import summed_dout

_LAYERS = {"conv": conv, "relu": relu, "max_pool": pool, "avg_pool": avg_pool, "fc": fc, "dropout": dropout,
           "add": add, "global_avg_pool": global_avg_pool}
FUNCTIONS = {
    **{(kind, "forward"): module.forward_stage for kind, module in _LAYERS.items()},
    **{(kind, "backward"): module.backward_stage for kind, module in _LAYERS.items()},
    ("batch_norm", "stats"): batch_norm.stats_stage,
    ("batch_norm", "forward"): batch_norm.forward_stage,
    ("batch_norm", "grads"): batch_norm.grads_stage,
    ("batch_norm", "backward"): batch_norm.backward_stage,
    ("loss", "forward"): loss.forward_stage,
    ("update", "update"): update.update_stage,
    ("network", "evaluate"): whole_network.evaluate_stage,
}
SUMMED_DOUT = ("backward", "grads")


def stage_function(function: tuple[str, str]):
    """The stage function a StageDef names; a backward stage's gets its readers' gradients summed."""
    fn = FUNCTIONS[function]
    return functools.partial(_with_summed_dout, fn) if function[1] in SUMMED_DOUT else fn


def _with_summed_dout(fn, inputs, ctx):
    return fn(summed_dout(inputs), ctx)
