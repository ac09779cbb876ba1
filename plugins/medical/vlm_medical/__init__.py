"""vlm's medical imaging plugin (MONAI): segmentation and measurement of lesions.

For research use only: not a medical device, not for diagnosis.
"""

__version__ = "0.1.0"
