"""Tools for plugin authors: a conformance check, a dashboard run helper and pytest fixtures.

The pytest plugin (:mod:`vlm_core.testing.pytest_plugin`) is registered through the ``pytest11``
entry point, so its fixtures are available in any project that installs vlm-core.
"""

from vlm_core.testing.conformance import ConformanceReport, check_plugin
from vlm_core.testing.dashboard import DashboardRun, DashboardRunError, run_in_dashboard

__all__ = [
    "ConformanceReport",
    "DashboardRun",
    "DashboardRunError",
    "check_plugin",
    "run_in_dashboard",
]
