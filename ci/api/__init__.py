"""The public interface every front end calls (docs/architecture.md, layer 4): runs of the pipeline,
plans, builds, the site around a run, re-validation and what the build cache janitor keeps.

Front ends write `from ci import api` and call `api.run_pipeline(...)`; the modules behind it are
`pipeline` (runs, plans, builds, the site lock) and `buildcache`; re-validation is `ci.api.retest`.
"""

from ci.api.buildcache import spack_cache_locks
from ci.api.pipeline import (
    SITE_STEPS,
    PlanResult,
    build,
    build_environment,
    cancel_run_jobs,
    catalog,
    cleanup,
    docker_engine,
    ensure_base_image,
    ensure_local_images,
    hold_site,
    lock_lease,
    open_site,
    plan,
    prune_target,
    publish_tested,
    run_pipeline,
    site_host,
    site_listing,
    verify_target,
    write_reports,
)

__all__ = [
    "SITE_STEPS", "PlanResult", "build", "build_environment", "cancel_run_jobs", "catalog", "cleanup",
    "docker_engine", "ensure_base_image", "ensure_local_images", "hold_site", "lock_lease", "open_site", "plan",
    "prune_target", "publish_tested", "run_pipeline",
    "site_host", "site_listing", "spack_cache_locks", "verify_target", "write_reports",
]
