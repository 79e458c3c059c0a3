"""Entry points of the containers CI: one task per pipeline step, and the whole chain.

Every task parses its flags, calls the `ci` package, and prints; see `inv --list` and
`inv <task> --help`. Defaults come from invoke.yaml (profile `local`), `INVOKE_CI_*`
variables or `-f FILE`; a flag overrides them for one call.

This file only assembles the namespace: each collection lives in its own module of `ci/cli/`
(docs/architecture.md), and the library is imported when a task runs, not when the list loads.
"""

from __future__ import annotations

import os
import sys

from invoke.collection import Collection

# Invoke turns bytecode caching off before it loads this file (its `--write-pyc` flag, meant for
# loose task files); the library is a package whose .pyc files Python keeps fresh by itself, and
# compiling it from source on every call cost 0.3 s of each `inv` run. PYTHONDONTWRITEBYTECODE still rules.
sys.dont_write_bytecode = bool(os.environ.get("PYTHONDONTWRITEBYTECODE"))

from ci.cli import gh, local, migrate, pipeline, publish, runners, service, site, spack, vm  # noqa: E402 (after the flag)

ns = Collection(*pipeline.TASKS)
for collection in (local.ns, site.ns, vm.ns, vm.openstack, gh.ns, migrate.ns, spack.ns, runners.ns, service.ns,
                   publish.ns):
    ns.add_collection(collection)
