"""The torch-free verification core: model files, running them, output mapping,
detections, parity verdicts and golden vectors.

Build, report, quantization and bench stand on it; it imports only NumPy, the core
`featherface` modules and the SDK (one detect path: `featherface.sdk.Detector`), never
torch, TensorFlow or the converters.
"""
