"""Spark ML classes: `from sparkcnn.ml import CNNClassifier`."""
from pipeline.ml.estimator import CNNClassifier
from pipeline.ml.model import CNNClassificationModel

__all__ = ["CNNClassifier", "CNNClassificationModel"]
