"""vlm's driving plugin: road-scene detection and tracking on torchvision detectors.

Task: ``driving.detect`` (images or videos → boxes with classes and scores; track ids, an
annotated MP4 and per-frame JSONL for videos). See the plugin's README.
"""

__version__ = "0.1.0"
