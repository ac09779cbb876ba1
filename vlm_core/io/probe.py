"""What a header check leaves behind: :class:`Probe`, one input's format, kind and shape."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from vlm_core.fileio import sha256_file
from vlm_core.kinds import Kind


@dataclass(frozen=True)
class Probe:
    """An input that passed the header checks: its format, kind and header-reported shape.

    An input of several files (a DICOM series) has ``path`` = the folder that holds them and
    ``members`` = the files in load order; ``size_bytes`` is then their total size.
    """

    path: Path
    format: str
    kind: Kind
    shape: tuple[int, ...]
    size_bytes: int
    members: tuple[Path, ...] = ()

    @property
    def files(self) -> tuple[Path, ...]:
        """The files to read: the members, or the one file at ``path``."""
        return self.members or (self.path,)

    def sha256(self) -> str:
        """The file's sha256; for several files, the sha256 of their sha256s (hex, one per
        line, in member order), so it changes when any member's content or the order does."""
        if not self.members:
            return sha256_file(self.path)
        digests = "\n".join(sha256_file(member) for member in self.members)
        return hashlib.sha256(digests.encode("ascii")).hexdigest()
