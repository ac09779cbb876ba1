"""Deployment: take a task's trained network out of Python and make it smaller.

- `vlm export TASK --format onnx|pt2` (:func:`vlm_core.deploy.export.export_task`): ONNX
  through ``torch.onnx.export`` (the dynamo exporter), checked with ``onnx.checker``; ``.pt2``
  through ``torch.export``. Every export runs a parity check on held-out inputs and writes it,
  with the opset, versions and sha256, into the ``model.json`` beside the file.
- `vlm run TASK ... -p weights=OUT/model.onnx` runs the exported file through the task's own
  pre- and post-processing (:mod:`vlm_core.deploy.programs`, loaded by the one weights path).
- `vlm compress TASK --method int8|prune|distill` (:mod:`vlm_core.deploy.compress`): a smaller
  network with a report of size, parameters, CPU latency and the task metric before and after.

A task takes part by naming a :class:`~vlm_core.deploy.spec.DeploySpec` in
``TaskSpec.deploy``. Importing this package imports nothing heavy.
"""
