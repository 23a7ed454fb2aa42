"""On-device SDK: numpy, pillow and one runtime only (no torch, no tensorflow)."""
