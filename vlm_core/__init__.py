"""vlm core: the plugin contract, typed data, safe loading, exporters, runner and run store.

Importing this package is cheap; submodules load what they need when they are used.
"""

from vlm_core.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
