"""Output kinds: one registration per kind of task output (its class, JSON summary, exporters,
``vlm run`` line, dashboard renderer and History view), looked up by the runner, the exporters,
the CLI and the dashboard. See :mod:`vlm_core.outputs.kind` and docs/output-kinds.md."""

from vlm_core.outputs.kind import OutputKind, OutputKinds, validate_output_kind

__all__ = ["OutputKind", "OutputKinds", "validate_output_kind"]
