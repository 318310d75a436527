"""Measuring the cost of training: `sparkcnn bench`, per-storage I/O, the cluster rows and the cost model."""
