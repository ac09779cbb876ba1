"""Every art test runs with a private VLM_HOME (the vlm pytest plugin's ``vlm_home``): runs,
the run store and a quarantine after a failed run stay out of the user's own configuration."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _private_home(vlm_home: Path) -> Iterator[Path]:
    yield vlm_home
