"""Tools for plugin authors: a conformance check and pytest fixtures.

The pytest plugin (:mod:`vlm_core.testing.pytest_plugin`) is registered through the ``pytest11``
entry point, so its fixtures are available in any project that installs vlm-core.
"""

from vlm_core.testing.conformance import ConformanceReport, check_plugin

__all__ = ["ConformanceReport", "check_plugin"]
