"""Entry points of the containers CI: one task per pipeline step, and the whole chain.

Every task parses its flags, calls the `ci` package, and prints; see `inv --list` and
`inv <task> --help`. Defaults come from invoke.yaml (profile `local`), `INVOKE_CI_*`
variables or `-f FILE`; a flag overrides them for one call.

This file only assembles the namespace: each collection lives in its own module of `ci/cli/`
(docs/architecture.md), and the library is imported when a task runs, not when the list loads.
"""

from __future__ import annotations

from invoke.collection import Collection

from ci.cli import gh, local, migrate, pipeline, publish, runners, service, site, spack, vm

ns = Collection(*pipeline.TASKS)
for collection in (local.ns, site.ns, vm.ns, vm.openstack, gh.ns, migrate.ns, spack.ns, runners.ns, service.ns,
                   publish.ns):
    ns.add_collection(collection)
