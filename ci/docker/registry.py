"""Move an image to the site: push to the site's registry, so only changed layers cross the wire.

Locally the registry is Debian's docker-registry on 127.0.0.1:5000. For a remote site the
registry listens on the login node's loopback and is reached through an SSH port-forward, as
the LUMI pipeline does; the push then goes to 127.0.0.1:<local_port> here and lands in the
same registry the site's engine pulls from. Registry credentials go to `docker login` on stdin.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO

from ci.config.settings import RegistrySettings
from ci.docker import whales
from ci.docker.engine import DockerEngine
from ci.engines.base import RegistryCredentials
from ci.errors import SiteError
from ci.hosts import Host, SSHHost

_LAYER = re.compile(r"^(?P<id>[0-9a-f]{12}): (?P<status>Pushed|Layer already exists|Mounted from .*)$")


@dataclass(frozen=True)
class PushResult:
    reference: str  # what the site's engine pulls
    pushed_layers: int
    existing_layers: int


def site_reference(settings: RegistrySettings, name: str, tag: str) -> str:
    return f"{settings.address}/{name}:{tag}"


class Registry:
    """The site's registry as seen from the build side (directly, or through a tunnel)."""

    def __init__(self, settings: RegistrySettings, engine: DockerEngine, site_host: Host):
        self.settings = settings
        self.engine = engine
        self.site_host = site_host
        self._logged_in: set[int] = set()  # the engines (by id) holding this run's registry login
        self._engines: list[DockerEngine] = [engine]

    @property
    def push_address(self) -> str:
        return f"127.0.0.1:{self.settings.local_port}" if self.settings.tunnel else self.settings.address

    @contextmanager
    def reachable(self) -> Iterator[None]:
        """Open the SSH tunnel for the duration of a run when the registry is remote; at its end, forget
        the run's registry login (its private Docker config folder is removed)."""
        try:
            if not self.settings.tunnel:
                yield
                return
            if not isinstance(self.site_host, SSHHost):
                raise SiteError("ci.site.registry.tunnel needs an SSH site host (ci.site.ssh.host)")
            with self.site_host.tunnel(self.settings.local_port, self.settings.remote_port):
                yield
        finally:
            for engine in self._engines:
                engine.forget_logins()  # the run's registry login ends with the run
            self._logged_in.clear()

    def credentials(self) -> RegistryCredentials | None:
        """The registry login from the environment, for the site's engine to pull with (on stdin)."""
        username = os.environ.get(self.settings.username_env)
        token = os.environ.get(self.settings.token_env)
        return RegistryCredentials(username, token) if username and token else None

    def login(self, engine: DockerEngine | None = None) -> None:
        """Log in once per engine when credentials are configured; the token goes on stdin, never argv."""
        engine = engine or self.engine
        credentials = self.credentials()
        if id(engine) in self._logged_in or credentials is None:
            return
        if engine not in self._engines:
            self._engines.append(engine)
        try:
            engine.login(self.push_address, credentials.username, credentials.password)
        except whales.DockerException:
            raise SiteError(f"registry {self.push_address} refused the credentials from "
                            f"{self.settings.username_env}/{self.settings.token_env}") from None
        self._logged_in.add(id(engine))

    def push(self, local_tag: str, name: str, tag: str, log: IO[str], engine: DockerEngine | None = None) -> PushResult:
        """Push from `engine` (the build host holding the image; default: the registry's engine)."""
        engine = engine or self.engine
        self.login(engine)
        push_ref = f"{self.push_address}/{name}:{tag}"
        engine.tag(local_tag, push_ref)
        pushed = existing = 0
        command = [*engine.docker_cmd, "push", push_ref]
        try:
            for _, raw in whales.stream_stdout_and_stderr(command):
                line = raw.decode(errors="replace")
                log.write(line)
                match = _LAYER.match(line.strip())
                if match:
                    if match.group("status") == "Pushed":
                        pushed += 1
                    else:
                        existing += 1
        except whales.DockerException as exc:
            raise SiteError(f"push of {push_ref} failed (exit {exc.return_code}); see {log.name}") from None
        finally:
            log.flush()
            if push_ref != local_tag:
                with contextlib.suppress(whales.DockerException):
                    engine.client.image.remove(push_ref)  # only the extra tag; layers stay
        return PushResult(reference=site_reference(self.settings, name, tag), pushed_layers=pushed,
                          existing_layers=existing)
