"""sparkcnn: convolutional-network training on Apache Spark as a staged pipeline."""
