"""Exporters: write every core output type to standard files, with provenance beside them.

Layout under the output folder::

    OUT/<item>/result.json        outputs summary + provenance, for every result
    OUT/<item>/<name>.png|.jpg    images, masks, overlays (<name>_overlay.jpg: previews)
    OUT/<item>/<name>.nii.gz      volumes and volume masks (the input's affine kept)
    OUT/<item>/<name>.yolo.txt    boxes in YOLO format (classes in OUT/<name>.classes.txt)
    OUT/<item>/<name>.mp4         videos (PyAV); small ones also as <name>/frame_*.png and GIF
    OUT/<item>/<name>.jsonl       tracks, one line per frame; also <name>.coco.json,
                                  <name>.yolo/frame_*.txt and <name>_overlay.mp4 on the video
    OUT/<name>.coco.json          boxes of every item in one COCO document
    OUT/<name>.jsonl              captions and replies, one line per item
    OUT/run.json                  the run: task, parameters, items and their files

Which files an output gets is set by its kind's exporters (docs/output-kinds.md): the core's
are in :mod:`vlm_core.export.exporters`; a plugin's kind names its own, which write through an
:class:`ItemExport`.
"""

from vlm_core.export.writer import ExportOptions, ItemExport, export_results, result_summary

__all__ = ["ExportOptions", "ItemExport", "export_results", "result_summary"]
