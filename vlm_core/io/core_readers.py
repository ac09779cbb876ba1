"""The core's own input readers, a built-in plugin of the core.

Images, NIfTI volumes and text are read by :class:`~vlm_core.io.readers.InputReader` objects
registered through the same ``register_readers`` hook as a plugin's (DICOM, video), so every
format is found one way: by format in the registry's readers. The host registers this module
with the plugin manager before any entry point (:func:`vlm_core.plugins.load_registry`), so
the core's formats are taken first and a plugin's reader for one of them is refused. It is not
an entry point and not listed among the installed plugins.

Importing this module imports no decoding library: the functions are named as
``"module:function"`` and load on first use, as a plugin's should.
"""

from __future__ import annotations

from collections.abc import Callable

from vlm_core.hookspecs import hookimpl
from vlm_core.io.readers import InputReader

#: the name the core's readers are registered under (their ``plugin``, in errors)
CORE_PLUGIN = "vlm_core"


def _reader(fmt: str, module: str, kind: str, description: str) -> InputReader:
    return InputReader(
        format=fmt,
        probe=f"vlm_core.io.{module}:probe_{kind}",
        load=f"vlm_core.io.{module}:load_{kind}",
        description=description,
        plugin=CORE_PLUGIN,
    )


#: one reader per format of :data:`~vlm_core.io.readers.CORE_DECODED`, by format
CORE_READERS: dict[str, InputReader] = {
    reader.format: reader
    for reader in (
        *(
            _reader(fmt, "images", "image", f"{fmt.upper()} image (Pillow)")
            for fmt in ("png", "jpeg", "tiff", "bmp", "webp")
        ),
        _reader("nifti", "nifti", "nifti", "NIfTI-1/NIfTI-2 volume (nibabel)"),
        _reader("nifti-gz", "nifti", "nifti", "gzipped NIfTI-1/NIfTI-2 volume (nibabel)"),
        _reader("text", "text", "text", "UTF-8 text, up to 1 MiB"),
    )
}


@hookimpl
def register_readers(register: Callable[[InputReader], None]) -> None:
    """The core's readers, registered like a plugin's."""
    for reader in CORE_READERS.values():
        register(reader)
