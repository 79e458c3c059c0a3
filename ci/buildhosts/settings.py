"""`ci.build_hosts` and `ci.build_pool`: the build engines a run spreads its builds over, and their shared store.

```yaml
build_hosts:                       # [] (the default): the one engine of ci.docker, ci.limits.build slots
  - {name: vm1, address: "ssh://ubuntu@10.0.0.5", builds: 2, platforms: [linux/amd64]}
  - {name: vm2, address: "unix:///run/containers-ci/docker-b.sock", builds: 2}
build_pool:
  registry: "127.0.0.1:5000"       # the build registry (host:port); needed by more than one host
  repository: containers-ci/build  # where built images and their cache refs go in it
  cache: true                      # registry-backed BuildKit cache, one ref per image
  placement: parent                # parent: prefer a host holding the parents; away: prefer one that does not
  insecure: null                   # plain HTTP to the registry; null: only for a loopback address
```

`ci/config.py` keeps both sections as written (it may import nothing of ours); this module checks
them once per run, each bad value one line naming the key (`ci.build_hosts[1].address`) and the fix.
An address is one of the forms the Docker client itself takes in `-H`: `unix:///path`,
`ssh://[user@]host[:port]`, `tcp://host:port`; anything else (spaces, options, control characters,
`../`) is refused before any command line is made.
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
