"""Converters from the PyTorch networks to deployment formats (ONNX, TFLite, Core ML)."""
import logging

# coremltools logs a warning per op (int64 -> int32) when converting, and on Linux five
# "Failed to load ..." lines on import (its Core ML runtime is macOS-only; we never use it).
logging.getLogger("coremltools").setLevel(logging.ERROR)
