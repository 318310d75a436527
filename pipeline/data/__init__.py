"""Data sources (CIFAR archives, image folders, Parquet datasets) and their ingest."""
