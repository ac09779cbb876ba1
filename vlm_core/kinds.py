"""The kinds of data that flow between files, tasks, renderers and exporters."""

from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """A kind of input or output. Each has one core type in :mod:`vlm_core.types`."""

    IMAGE = "image"
    VOLUME = "volume"
    VIDEO = "video"
    TEXT = "text"
    SCENE = "scene"
    BOXES = "boxes"
    TRACKS = "tracks"
    MASK = "mask"
    CAPTION = "caption"
    REPLY = "reply"
    IMAGE_SET = "image_set"
    EMBEDDINGS = "embeddings"
    METRICS = "metrics"
    FILE = "file"
    ATTRIBUTION = "attribution"

    def __str__(self) -> str:
        return self.value


#: Kinds a file on disk can be loaded as (the others are outputs only).
INPUT_KINDS = frozenset({Kind.IMAGE, Kind.VOLUME, Kind.VIDEO, Kind.TEXT, Kind.SCENE})

#: Kinds a task may return: every kind has a core output type (inputs can be outputs too).
OUTPUT_KINDS = frozenset(Kind)


class Capability(str, Enum):
    """What a task can do besides nothing."""

    RUN = "run"
    TRAIN = "train"
    EVAL = "eval"
    EXPORT = "export"

    def __str__(self) -> str:
        return self.value
