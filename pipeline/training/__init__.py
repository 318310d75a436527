"""A training run: its stages planned, run in one of the modes, and their metrics."""
