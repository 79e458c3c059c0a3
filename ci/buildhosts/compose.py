"""The pool of a run, made from its settings (what `ci.api` calls)."""

from __future__ import annotations

from ci.buildhosts.host import DockerBuildHost
from ci.buildhosts.pool import BuildPool, Say
from ci.config.build_hosts import BuildHostSettings
from ci.config.pool import build_hosts
from ci.config.settings import Settings
from ci.docker.engine import DockerEngine
from ci.shutdown import CancelToken


def host_engine(settings: Settings, host: BuildHostSettings) -> DockerEngine:
    """The Docker engine of one host: its own address and client, else those of `ci.docker`."""
    client = host.client or settings.docker_client
    return DockerEngine(client_call=[client] if client != "auto" else None,
                        host=host.address or settings.docker_host, buildkit=settings.buildkit,
                        network=settings.docker_network)


def open_pool(settings: Settings, *, jobs: int | None = None, say: Say | None = None,
              cancel: CancelToken | None = None) -> BuildPool:
    """The run's build pool: `ci.build_hosts` (or the one engine of `ci.docker`) and `ci.build_pool`.

    `settings` are those the run builds with (the build VM's engine already in `docker_host`).
    """
    checked = build_hosts(settings, jobs)
    hosts = [DockerBuildHost(host, host_engine(settings, host)) for host in checked.hosts]
    return BuildPool(hosts, checked.pool, say=say, cancel=cancel)
