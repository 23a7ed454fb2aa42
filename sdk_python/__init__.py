"""On-device SDK: numpy, pillow and one runtime only (no torch, no tensorflow).

    from featherface.sdk import Detector, DetectorOptions
    with Detector.load("dist/pi4", DetectorOptions(score_threshold=0.6)) as detector:
        faces = detector.detect("photo.jpg")
"""
from .detector import Detector, DetectorOptions, VideoFaces
from .faces import Face

__all__ = ["Detector", "DetectorOptions", "Face", "VideoFaces"]
