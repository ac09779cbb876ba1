"""Benchmarks: each engine against the raw library doing the same work, in the same process.

Every benchmark returns rows of plain data (throughput, ratio to raw, peak memory, MFU) that
`vlm bench` prints as a table and writes as JSON; on a GPU, `benchmarks/gpu_check.sh` runs them
all with the project's other GPU lines (docs/benchmarks.md, "The GPU check").
"""
