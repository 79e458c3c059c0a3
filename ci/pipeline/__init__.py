"""The pipeline (docs/architecture.md, layer 3): the executor, one module per step, test jobs and their
judge, run folders, reports, progress, the timeline and recorded build failures.
"""
