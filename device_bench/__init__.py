"""On-device latency and parity harness (numpy, pillow and one runtime only)."""
