"""Post-training quantization (INT8 TFLite, compressed Core ML)."""
