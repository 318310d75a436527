"""Layers of the network: pure numpy kernels and the table functions that wrap them."""
