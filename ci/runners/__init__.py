"""GitHub Actions runners allocated as Slurm jobs: one ephemeral, just-in-time runner per queued job.

Modules: `settings` (ci.runners in invoke.yaml), `github` (REST client: ETags, rate limits,
retries), `logic` (matching and counting, pure), `state` (SQLite rows, the lock), `jobs` (names,
job script, JIT file), `allocator` (the poll loop and reconcile), `endpoints` (metrics, webhooks),
`metrics`, and `control` (what tasks.py calls).

Where this package sits among the others: docs/architecture.md.
"""
