"""Orchestration: runs, manifests, resume, Spark execution and the command line."""
