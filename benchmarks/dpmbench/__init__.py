"""Helpers of `benchmarks/run_all.py`: DPM against single-step pruning on real data.

One concept per module: `setups` (dense models and data), `protocol` (the shared training budget),
`modes` (what each pruning mode changes), `dense` and `sparse` (cached starting points), `runner`
(one pruning run through `dpm_cli.pipeline.prune`), `grid` (which runs, executed by `workers`),
`stats` (paired statistics), `speed` (latency and per-step overhead), `tables` (Markdown), `machine`.
"""
