"""The image sizes a task accepts (:class:`~vlm_core.tasks.ImageLimits`), checked against a
probed input's header before the run: no pixel is decoded and no plugin code runs."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from vlm_core.errors import InputError
from vlm_core.io.probe import Probe
from vlm_core.kinds import Kind


class SizeLimits(Protocol):
    """What :func:`check_image_size` asks of the limits: :class:`vlm_core.tasks.ImageLimits`
    (declared here as an interface, so the input layer does not import the task contract)."""

    def problem(self, width: int, height: int, task: str) -> str | None: ...


def frame_size(probe: Probe) -> tuple[int, int] | None:
    """``(width, height)`` of an image input or of a video input's frames, from the shape its
    header reported (images ``(H, W, C)``, videos ``(frames, H, W, C)``); None for other kinds
    or a shape that does not say."""
    shape = probe.shape
    if probe.kind is Kind.IMAGE and len(shape) >= 2:
        return int(shape[1]), int(shape[0])
    if probe.kind is Kind.VIDEO and len(shape) >= 3:
        return int(shape[2]), int(shape[1])
    return None


def check_image_size(
    probe: Probe, limits: SizeLimits, task: str, what: str | Path | None = None
) -> None:
    """Raise :class:`InputError` (one line, naming ``what``, default the input's path, and
    ``task``) when the probed image or video frames are outside ``limits``. Tasks use it for
    image files they take as parameters (a style image), so these are checked like inputs."""
    size = frame_size(probe)
    if size is None:
        return
    problem = limits.problem(size[0], size[1], task)
    if problem is not None:
        if probe.kind is Kind.VIDEO:
            problem = problem.replace("image ", "video frames ", 1).replace(" is ", " are ", 1)
        raise InputError(f"{what if what is not None else probe.path}: {problem}")
