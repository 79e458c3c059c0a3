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

An address is one of the forms the Docker client itself takes in `-H`: `unix:///path`,
`ssh://[user@]host[:port]`, `tcp://host:port`; anything else (spaces, options, control characters,
`../`) is refused before any command line is made. `ci.config.pool` makes the pool of a run
from these (the default one-engine pool when no host is listed).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from ci.config.base import ConfigModel
from ci.config.grammars import Address, Text, Word
from ci.validation import check_text, invalid, shown

_ADDRESS = re.compile(
    r"\Aunix:///(?!.*(?:^|/)\.\.(?:/|$))[A-Za-z0-9._/+-]{1,200}\Z"
    r"|\Assh://(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?(?![-.])[A-Za-z0-9.-]{1,253}(?::[0-9]{1,5})?\Z"
    r"|\Atcp://(?![-.])[A-Za-z0-9.-]{1,253}:[0-9]{1,5}\Z"
    r"|\Assh://(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}@)?\[[0-9A-Fa-f:]{2,45}\](?::[0-9]{1,5})?\Z"
    r"|\Atcp://\[[0-9A-Fa-f:]{2,45}\]:[0-9]{1,5}\Z")
_PLATFORM = re.compile(r"\A[a-z0-9]{1,16}/[a-z0-9_]{1,16}(/[a-z0-9]{1,8})?\Z")
_REPOSITORY = re.compile(r"\A[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*){0,7}\Z")


def _address(value: str) -> str:
    check_text(value, what="engine address", max_length=300, pattern=_ADDRESS,
               fix="write unix:///path/to/docker.sock, ssh://user@host[:port] or tcp://host:port")
    if value.startswith("unix://") and "/../" in value + "/":
        raise invalid(f"{shown(value)} climbs out of its folder ('..')", "write the socket's absolute path")
    return value


def _platform(value: str) -> str:
    return check_text(value, what="platform", max_length=40, pattern=_PLATFORM,
                      fix="write os/arch as BuildKit names it, e.g. linux/amd64 or linux/arm64")


def _repository(value: str) -> str:
    return check_text(value, what="repository", max_length=200, pattern=_REPOSITORY,
                      fix="write a lowercase repository path such as containers-ci/build")


EngineAddress = Annotated[str, AfterValidator(_address)]
Platform = Annotated[str, AfterValidator(_platform)]
Repository = Annotated[str, AfterValidator(_repository)]
Slots = Annotated[int, Field(strict=True, ge=1, le=1000)]


class BuildHostSettings(ConfigModel):
    """One engine of the pool: where it is, how many builds it runs at once, what it can build."""

    name: Word
    address: EngineAddress | None = None  # None: ci.docker.host (the default engine when that is unset too)
    builds: Slots = 2
    platforms: tuple[Platform, ...] = ()  # what it builds; () = whatever a run asks (emulation is its business)
    client: Text | None = None  # None: ci.docker.client


class BuildPoolSettings(ConfigModel):
    """The store every host shares: built images by digest and the BuildKit cache, one ref per image."""

    registry: Address | None = None
    repository: Repository = "containers-ci/build"
    cache: Annotated[bool, Field(strict=True)] = True
    placement: Literal["parent", "away"] = "parent"
    insecure: Annotated[bool, Field(strict=True)] | None = None  # plain HTTP; None: only on loopback

    @property
    def scheme(self) -> str:
        """How we (and the engines) speak to the registry: plain HTTP only on loopback unless told."""
        if self.insecure is not None:
            return "http" if self.insecure else "https"
        host = (self.registry or "").rsplit(":", 1)[0].strip("[]")
        return "http" if host in ("localhost", "::1") or host.startswith("127.") else "https"


