"""`inv publish.*`: tested images to the places their users pull from (docs/publish.md).

`inv publish` sends what tested/ holds to the targets of ci.publish (what a push's or a tag's workflow
run does); `inv publish.verify TARGET` checks a target against its catalog; `inv publish.prune TARGET
--keep N` keeps the newest versions.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, names, say, settings_from
from ci.cli.help import COMMON_HELP, SITE_HELP
from ci.errors import CIError

PUBLISH_HELP = {
    "profile": COMMON_HELP["profile"],
    "site_root": SITE_HELP["site_root"],
    "target": "Publish only to this target (repeatable, or comma separated; default: every target of ci.publish).",
    "only": "Publish only these image names (repeatable, or comma separated).",
    "force": "Publish again even where the target already lists the image's digest.",
    "json": COMMON_HELP["json"],
}


@task(iterable=["target", "only"], help=PUBLISH_HELP)
@explained
def publish_run(c, profile=None, site_root=None, target=None, only=None, force=False, json=False):  # type: ignore[no-untyped-def]
    """Publish the site's tested images to the configured targets (only what a target lacks).

    Exit 1 if a publication failed; each line says what went where and how to pull it.
    """
    from ci import api

    settings = settings_from(c, profile=profile, site_root=site_root)
    outcomes = api.publish_tested(settings, targets=names(target), only=names(only), force=force)
    if json:
        emit_json([outcome.__dict__ for outcome in outcomes])
    else:
        for outcome in outcomes:
            say(outcome.line())
        if not outcomes:
            say("nothing to publish: no tested image is wanted by the chosen targets")
    if any(outcome.state == "failed" for outcome in outcomes):
        raise Exit(code=1)


@task(help={"profile": COMMON_HELP["profile"],
            "key": "A public key file to check signatures against (default: the configured signing key, "
                   "else the key published beside the catalog).",
            "json": COMMON_HELP["json"]})
@explained
def publish_verify(c, target, profile=None, key=None, json=False):  # type: ignore[no-untyped-def]
    """Check a target against its catalog: checksums, signatures, nothing missing, nothing unlisted.

    Exit 1 with one line per problem; exit 0 when the target is exactly what its catalog lists.
    """
    from ci import api

    settings = settings_from(c, profile=profile)
    trusted = None
    if key is not None:
        try:
            trusted = Path(key).read_bytes()
        except OSError as exc:
            raise CIError(f"--key {key}: cannot read it ({exc.strerror})") from None
    result = api.verify_target(settings, target, trusted_key=trusted)
    if json:
        emit_json({"target": result.target, "entries": result.entries, "ok": result.ok, "problems": result.problems,
                   "notes": result.notes})
    else:
        for note in result.notes:
            say(f"note: {note}")
        for problem in result.problems:
            say(problem)
        say(f"{result.target}: {result.entries} catalog entries, "
            f"{'all verified' if result.ok else f'{len(result.problems)} problem(s)'}")
    if not result.ok:
        raise Exit(code=1)


@task(positional=["target"],
      help={"profile": COMMON_HELP["profile"], "keep": "How many versions of each image stay (newest first); required.",
            "yes": "Really remove (default: a dry run listing what would go)."})
@explained
def publish_prune(c, target, keep=None, profile=None, yes=False):  # type: ignore[no-untyped-def]
    """Keep the newest N versions of each image at a target; the catalog stops listing the rest first."""
    if keep is None:
        raise CIError("say how many versions of each image stay: --keep N (e.g. --keep 3)")
    try:
        count = int(keep)
    except ValueError:
        raise CIError(f"--keep {str(keep)[:20]!r}: write a whole number of versions, e.g. --keep 3") from None
    from ci import api

    settings = settings_from(c, profile=profile)
    for line in api.prune_target(settings, target, keep=count, apply=yes).lines():
        say(line)


ns = Collection("publish")
ns.add_task(publish_run, name="run", default=True)
ns.add_task(publish_verify, name="verify")
ns.add_task(publish_prune, name="prune")
