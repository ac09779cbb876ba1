"""Silence MONAI's start-up notices about optional GPU codecs this plugin does not use."""

from __future__ import annotations

import logging
import warnings


def quiet_monai() -> None:
    """MONAI logs a warning and warns twice on import when nvImageCodec is absent (it is an
    optional GPU DICOM decoder); those lines would reach every `vlm` command's stderr."""
    logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*nvImageCodec.*", category=UserWarning)
