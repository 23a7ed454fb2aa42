"""FeatherFace deployment kit: convert, verify and run FeatherFace face detectors on devices."""

__version__ = "0.1.0"
