"""What the tasks call: build an allocator from the settings, serve, reconcile once, report status.

The GitHub token is read from the environment here and handed to the client only; the cluster
side (host, scheduler) comes from the project's site settings, so the allocator runs where
`ci.site` points (this machine, normally a login node with Slurm's commands).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ci.api import site_host
from ci.config.runners import (
    TOKEN_ENV,
    WEBHOOK_SECRET_ENV,
    RunnersSettings,
    not_configured,
    resolve_dirs,
    token_from_environment,
)
from ci.config.settings import Settings
from ci.errors import ConfigError
from ci.github.actions import Actions, Scope
from ci.github.client import AppAuth, Auth, GitHubClient, Stopping, TokenAuth
from ci.runners.allocator import Allocator, observe
from ci.runners.endpoints import Endpoints, metrics_route, webhook_route
from ci.runners.logic import Phase, count_demand
from ci.runners.metrics import Metrics
from ci.runners.state import State, lock_holder, single_instance
from ci.schedulers import select_scheduler
from ci.shutdown import on_signals

log = logging.getLogger("ci.runners")


def runners_settings(settings: Settings) -> RunnersSettings:
    if settings.runners is None:
        raise not_configured()
    return settings.runners


def github_actions(runners: RunnersSettings, **client_options: Any) -> Actions:
    """The one GitHub client (ci.github.client), authenticated as the App or with $CI_GITHUB_TOKEN."""
    github = runners.github
    auth: Auth
    if github.app is not None:
        auth = AppAuth(github.app.app_id, github.app.installation_id, github.app.private_key_file)
    else:
        auth = TokenAuth(token_from_environment(), source=TOKEN_ENV)
    client = GitHubClient(github.api_url, auth, timeout=github.timeout, user_agent="containers-ci-runners",
                          **client_options)
    return Actions(client, Scope(github.repository, github.organisation))


@contextmanager
def allocator(settings: Settings, *, metrics: Metrics | None = None) -> Iterator[Allocator]:
    """An allocator holding the single-instance lock of its state folder."""
    runners = runners_settings(settings)
    folder, job_dir = resolve_dirs(runners, settings.state_dir)
    with single_instance(folder):
        state = State(folder)
        host = site_host(settings)
        github = github_actions(runners)
        try:
            scheduler = select_scheduler(settings.site.scheduler, host, state_dir=f"{job_dir}/direct")
            yield Allocator(runners, state=state, github=github, scheduler=scheduler, host=host, job_dir=job_dir,
                            account=settings.site.account, partition=settings.site.partition, metrics=metrics)
        finally:
            github.client.close()
            host.close()
            state.close()


def configure_logging() -> None:
    logger = logging.getLogger("ci.runners")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise


def serve(settings: Settings, say: Callable[[str], None], *,
          on_start: Callable[[Allocator, dict[str, str]], None] | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `Allocator.stop()`); the runners keep running (a restart adopts them).

    `on_start(allocator, urls)` is called once the endpoints listen (urls: "metrics", "webhook"), for a
    caller that embeds the allocator (tests, benchmarks) and stops it itself.
    """
    configure_logging()
    runners = runners_settings(settings)
    secret = b""
    if runners.webhook is not None:
        secret = os.environ.get(WEBHOOK_SECRET_ENV, "").encode()
        if not secret:
            raise ConfigError(f"ci.runners.webhook is set but {WEBHOOK_SECRET_ENV} is empty; export the webhook's "
                              "secret (the one entered in GitHub's webhook settings), or remove ci.runners.webhook")
    metrics = Metrics()
    endpoints = Endpoints()
    urls: dict[str, str] = {}
    with allocator(settings, metrics=metrics) as running, on_signals(lambda number, frame: running.stop()):
        try:
            if runners.metrics is not None:
                host, port = endpoints.add(runners.metrics.host, runners.metrics.port, "GET", runners.metrics.path,
                                           metrics_route(metrics.render))
                urls["metrics"] = f"http://{host}:{port}{runners.metrics.path}"
                say(f"metrics on {urls['metrics']}")
            if runners.webhook is not None:
                host, port = endpoints.add(runners.webhook.host, runners.webhook.port, "POST", runners.webhook.path,
                                           webhook_route(secret, runners.github.repository, running.on_webhook))
                urls["webhook"] = f"http://{host}:{port}{runners.webhook.path}"
                say(f"workflow_job webhooks on {urls['webhook']}")
            if on_start is not None:
                on_start(running, urls)
            say(f"serving {runners.github.repository}: {len(runners.targets)} target(s), "
                f"polling every {runners.poll_interval:g}s (state in {running.state.folder})")
            running.run()
        finally:
            endpoints.close()
    say("stopped; runners already started keep running and are adopted at the next start")


def reconcile(settings: Settings) -> list[str]:
    """One reconcile pass, with the lock (so not while `serve` runs: it reconciles itself)."""
    configure_logging()
    with allocator(settings) as running:
        try:
            actions = running.reconcile()
        except Stopping:  # pragma: no cover - no stop event is set here
            actions = []
    return actions or ["nothing to do: squeue, GitHub and the state agree"]


def status(settings: Settings) -> dict[str, Any]:
    """Targets, demand, runners by phase, rate limit: the serving allocator's last poll, or a fresh look."""
    runners = runners_settings(settings)
    folder, _ = resolve_dirs(runners, settings.state_dir)
    holder = lock_holder(folder)
    rows: list[dict[str, Any]] = []
    snapshot: dict[str, Any] | None = None
    if (folder / "state.db").exists():
        state = State(folder, readonly=True)
        try:
            rows = [row.as_dict() for row in state.live()]
            snapshot = state.snapshot()
            counts = state.counts()
        finally:
            state.close()
    else:
        counts = {}
    if holder is None or snapshot is None:
        marked = {t.get("name"): t.get("unservable", "") for t in (snapshot or {}).get("targets", [])}
        github = github_actions(runners, retries=2)
        try:
            observed = observe(github, f"{runners.prefix}-", runners.hosted_labels)
            demand = count_demand(observed.queued, runners.targets)
            rate = github.rate_limit().as_dict()
        finally:
            github.client.close()
        snapshot = {
            "time": time.time(), "targets": [
                {"name": t.name, "labels": list(t.labels), "max": t.max, "idle_timeout": t.idle_timeout,
                 "demand": demand.count(t.name), "unservable": marked.get(t.name, ""),
                 "runners": {p: n for p, n in counts.get(t.name, {}).items() if Phase(p).live}}
                for t in runners.targets],
            "unservable": [{"id": j.id, "run_id": j.run_id, "name": j.name, "labels": sorted(j.labels)}
                           for j in demand.unservable],
            "rate_limit": rate, "problems": [],
        }
    return {"ok": True, "serving": holder, "state_dir": str(folder), "repository": runners.github.repository,
            **{k: v for k, v in snapshot.items() if k not in ("repository",)}, "live_runners": rows}


def render_status(data: dict[str, Any]) -> list[str]:
    lines = [f"{data['repository']}: " + (f"served by {data['serving']}" if data["serving"] else
                                          "no allocator is serving (figures read just now)")]
    age = time.time() - float(data.get("time") or 0)
    lines.append(f"last poll {age:.0f}s ago" if data.get("time") else "never polled")
    for target in data.get("targets", []):
        by_phase = ", ".join(f"{n} {phase}" for phase, n in sorted(target.get("runners", {}).items())) or "none"
        line = (f"  {target['name']:<16} labels {','.join(target['labels'])}  demand {target['demand']}  "
                f"runners {by_phase}  (max {target['max']}, idle timeout {target['idle_timeout']:g}s)")
        if target.get("unservable"):
            line += f"  NOT SERVABLE: {target['unservable']}"
        elif target.get("held_back"):
            line += f"  held back: {target['held_back']}"
        if target.get("last_failure"):
            line += f"  last failure: {target['last_failure']}"
        lines.append(line)
    for job in data.get("unservable", []):
        lines.append(f"  unservable: job {job['id']} ({job['name']}) needs {','.join(job['labels'])}")
    rate = data.get("rate_limit") or {}
    if rate.get("remaining") is not None:
        reset = time.strftime("%H:%M:%S", time.localtime(rate["reset"])) if rate.get("reset") else "?"
        lines.append(f"rate limit: {rate['remaining']} of {rate.get('limit')} left (resets {reset})")
    for problem in data.get("problems", [])[-5:]:
        lines.append(f"  problem: {problem}")
    return lines


def state_folder(settings: Settings) -> Path:
    return resolve_dirs(runners_settings(settings), settings.state_dir)[0]
