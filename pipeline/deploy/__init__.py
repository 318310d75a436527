"""A trained network put to use: predict, score jobs and ONNX export."""
