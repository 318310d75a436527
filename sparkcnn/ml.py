"""Spark ML classes: `from sparkcnn.ml import CNNClassifier`."""
from sparkcnn.pipeline.ml.estimator import CNNClassifier
from sparkcnn.pipeline.ml.model import CNNClassificationModel

__all__ = ["CNNClassifier", "CNNClassificationModel"]
