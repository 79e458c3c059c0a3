"""`inv spack.*`: the Spack binary build cache janitor.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, names, settings_from, stdout
from ci.cli.help import COMMON_HELP


@task(iterable=["lock"], help={
    "profile": COMMON_HELP["profile"],
    "definitions": COMMON_HELP["definitions"],
    "cache": "The build cache: a directory (v2 or v3 layout) or oci://host/name, oci+http://host/name "
             "(default: ci.spack.buildcache).",
    "max_age": "Keep unreferenced entries younger than this many days (default: ci.spack.janitor.max_age, 30).",
    "lock": "Another spack.lock whose hashes are kept; repeat for more (the current definitions' recorded "
            "locks are always kept).",
    "yes": "Really delete (default: a dry run that lists the entries and bytes that would go).",
    "scheduled": "As the weekly workflow job: delete only when ci.spack.janitor.delete is true, max age from "
                 "ci.spack.janitor.max_age, the listing also to GitHub's step summary.",
    "json": COMMON_HELP["json"],
})
@explained
def spack_janitor(c, profile=None, definitions=None, cache=None, max_age=None, lock=None, yes=False,  # type: ignore[no-untyped-def]
                  scheduled=False, json=False):
    """Prune the Spack binary build cache: keep what current environments use and what is young.

    An entry stays when a current definition's recorded spack.lock references it or when it is
    younger than --max-age days; every other entry goes, with every entry that depends on one that
    goes (the cascade ends on any input, cycles included). Without --yes nothing is deleted: the
    listing shows what would go and how many bytes. After deleting, the cache index is rewritten.
    """
    from ci import api
    from ci.buildcache import caches as spack_buildcache
    from ci.buildcache import janitor as spack_janitor_module
    settings = settings_from(c, profile=profile, definitions=definitions)
    spack = settings.spack
    url = cache or spack.buildcache
    if not url:
        raise Exit("no build cache: set ci.spack.buildcache or pass --cache", code=2)
    if scheduled:
        yes = yes or spack.janitor.delete
    days = float(max_age) if max_age is not None else spack.janitor.max_age
    locks, warnings = api.spack_cache_locks(settings, [Path(p) for p in names(lock)])
    keep, problems = spack_janitor_module.referenced_hashes(locks)
    store = spack_buildcache.open_store(url, s3=spack.s3)
    try:
        result = spack_janitor_module.plan(store, keep_hashes=keep, max_age_days=days, now=spack_buildcache.now(),
                                           warnings=[*warnings, *problems])
        spack_janitor_module.run(store, result, yes=yes)
    finally:
        store.close()
    if scheduled:
        from ci.github.outputs import publish_step_summary

        publish_step_summary(spack_janitor_module.markdown(result))
    if json:
        emit_json(result.as_dict())
        return
    for line in spack_janitor_module.describe(result):
        stdout.print(line, highlight=False, markup=False)


ns = Collection("spack")
ns.add_task(spack_janitor, name="janitor")
