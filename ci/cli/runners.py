"""`inv runners.*`: GitHub Actions runners as Slurm jobs. `runners.serve` is the long-running
allocator (a systemd unit on a login node); `status` and `reconcile` are for the person looking after it.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.tasks import task

from ci.cli.common import emit_json, explained, say, settings_from, stdout
from ci.cli.help import RUNNERS_HELP


@task(help={"profile": RUNNERS_HELP["profile"]})
@explained
def runners_serve(c, profile=None):  # type: ignore[no-untyped-def]
    """Allocate one ephemeral GitHub runner per queued job, as Slurm jobs, until SIGINT or SIGTERM.

    Polls GitHub every ci.runners.poll_interval seconds (conditional requests: an idle poll costs no
    rate limit), matches each queued job to a target of ci.runners.targets, and submits just-in-time
    runners through the site's scheduler. Reconciles with squeue and GitHub's runner list at start and
    every ci.runners.reconcile_interval seconds. Exits 0 after a clean stop; runners keep running and
    are adopted at the next start. Token from CI_GITHUB_TOKEN; one allocator per state folder (a lock).
    """
    from ci.runners import control

    control.serve(settings_from(c, profile=profile), say=say)


@task(help=RUNNERS_HELP)
@explained
def runners_status(c, profile=None, json=False):  # type: ignore[no-untyped-def]
    """Targets, demand, runners by state, unservable jobs and the rate limit left.

    Reads the serving allocator's last poll from its state folder; when none serves, asks GitHub
    now (read-only: nothing is started or cancelled).
    """
    from ci.runners import control

    data = control.status(settings_from(c, profile=profile))
    if json:
        emit_json(data)
        return
    for line in control.render_status(data):
        stdout.print(line, highlight=False, markup=False)


@task(help=RUNNERS_HELP)
@explained
def runners_reconcile(c, profile=None, json=False):  # type: ignore[no-untyped-def]
    """One reconcile pass: adopt live runner jobs, cancel jobs whose runner is gone, delete stale runners.

    Takes the allocator's lock, so it refuses while `inv runners.serve` runs (which reconciles by itself).
    """
    from ci.runners import control

    actions = control.reconcile(settings_from(c, profile=profile))
    if json:
        emit_json({"ok": True, "actions": actions})
        return
    for line in actions:
        stdout.print(line, highlight=False, markup=False)


ns = Collection("runners")
ns.add_task(runners_serve, name="serve")
ns.add_task(runners_status, name="status", default=True)
ns.add_task(runners_reconcile, name="reconcile")
