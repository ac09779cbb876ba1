"""Plugin '{{name}}': what it registers. Importing this module must stay cheap (no torch)."""

from typing import Literal

from pydantic import Field
from vlm_core import hookimpl
from vlm_core.kinds import Kind
from vlm_core.tasks import Sample, TaskParams, TaskSpec, package_file


class ThresholdParams(TaskParams):
    method: Literal["otsu", "fixed"] = Field(
        "otsu", description="Otsu's automatic threshold, or a fixed level."
    )
    level: float = Field(
        0.5, ge=0.0, le=1.0, description="Threshold for method=fixed, as a fraction of the range."
    )
    invert: bool = Field(False, description="Treat dark pixels as foreground.")


@hookimpl
def register_tasks(register):
    register(
        TaskSpec(
            id="{{name}}.threshold",
            title="Threshold segmentation",
            description="Splits an image into foreground and background by intensity threshold.",
            domain="example",
            run="vlm_{{name}}.threshold:run",  # imported when the task first runs
            params=ThresholdParams,
            inputs=(Kind.IMAGE,),
            outputs=(Kind.MASK, Kind.METRICS),
            samples=(Sample("disk", (package_file("vlm_{{name}}", "samples", "disk.png"),)),),
            memory_mb=64,
        )
    )
