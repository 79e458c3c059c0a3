"""GitHub Actions runners allocated as Slurm jobs: one ephemeral, just-in-time runner per queued job.

Modules: `settings` (ci.runners in invoke.yaml), `github` (REST client: ETags, rate limits,
retries), `logic` (matching and counting, pure), `state` (SQLite rows, the lock), `jobs` (names,
job script, JIT file), `allocator` (the poll loop and reconcile), `endpoints` (metrics, webhooks),
`metrics`, and `control` (what tasks.py calls). The job side, rendered into each job script:
`nodework` (the node-local folder and its clean-up), `jobdocker` (a private rootless Docker or
Podman daemon per job), `imagecache` (the runner image once per node, keyed by digest);
docs/runners-docker.md says what a node needs.

Where this package sits among the others: docs/architecture.md.
"""
