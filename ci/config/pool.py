"""The pool of a run: `ci.build_hosts` and `ci.build_pool` (typed in ci/config/build_hosts.py) made concrete.

No host listed: one host, the engine of `ci.docker`, with `ci.limits.build` slots (or `--jobs`).
Several hosts: names and engines unique, and a build registry they share; each problem one line.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from ci.config.base import WHERE, ConfigModel
from ci.config.build_hosts import BuildHostSettings, BuildPoolSettings
from ci.config.settings import Settings
from ci.errors import ConfigError, Problem
from ci.validation import shown


class BuildHosts(ConfigModel):
    """The checked pool: its hosts (at least one) and the shared store."""

    hosts: tuple[BuildHostSettings, ...]
    pool: BuildPoolSettings = Field(default_factory=BuildPoolSettings)
    configured: bool = False  # False: the one-element default made from ci.docker

    @property
    def capacity(self) -> int:
        return sum(host.builds for host in self.hosts)


def _problem(field: str, message: str, fix: str) -> ConfigError:
    return ConfigError.from_problems([Problem(Path(WHERE), field, message, fix)])


def build_hosts(settings: Settings, jobs: int | None = None) -> BuildHosts:
    """The pool of a run from its settings: `ci.build_hosts`, else the one engine of `ci.docker`.

    `jobs` (the `--jobs` flag) sets the default engine's slots; for a configured pool it caps the
    whole pool (the executor's build capacity), applied by the caller.
    """
    pool = settings.build_pool
    if not settings.build_hosts:
        default = BuildHostSettings(name="default", address=settings.docker_host,
                                    builds=jobs if jobs is not None else settings.limits.get("build", 2),
                                    platforms=())
        return BuildHosts(hosts=(default,), pool=pool, configured=False)
    hosts = settings.build_hosts
    names = [host.name for host in hosts]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise _problem("ci.build_hosts", f"host name {shown(twice[0])} appears more than once",
                       "give every host its own name")
    addresses = [host.address or "(ci.docker.host)" for host in hosts]
    doubled = sorted({a for a in addresses if addresses.count(a) > 1})
    if doubled:
        raise _problem("ci.build_hosts", f"engine {shown(doubled[0])} is listed twice",
                       "list each engine once, with builds: N for its slots")
    if len(hosts) > 1 and pool.registry is None:
        raise _problem("ci.build_pool.registry", f"{len(hosts)} build hosts but no build registry",
                       "set ci.build_pool.registry (host:port) so the hosts share images and cache")
    return BuildHosts(hosts=hosts, pool=pool, configured=True)
