"""Orchestration: runs, manifests, resume, Spark execution and the command line."""
from sparkcnn.pipeline import numerics

numerics.pin()  # before numpy loads in this process
