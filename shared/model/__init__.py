"""The default model: stateless image features, a scikit-learn head exported to ONNX, a local registry."""
