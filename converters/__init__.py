"""Converters from the PyTorch networks to deployment formats (ONNX, TFLite, Core ML)."""
