"""One build host of the pool: what the pipeline may ask of it, and the Docker engine that answers.

The pipeline (`ci.pipeline.steps.build`) and the pool speak to `BuildHost`, never to a concrete kind of
engine; `DockerBuildHost` is the one kind today: a Docker engine reached on a local socket, over
`ssh://` (as the build VM is) or `tcp://`, building with buildx where the client has it and with
the classic client's BuildKit otherwise (see `ci.docker`).
"""

from __future__ import annotations

import contextlib
import re
from typing import IO, Protocol

from ci.config.build_hosts import BuildHostSettings
from ci.docker import whales
from ci.docker.engine import BuildRequest, DockerEngine
from ci.errors import CIError
from ci.plan import KnownImage

_STEP_TITLE = re.compile(r"^#(?P<id>\d+) \[[^\]]*\] (?P<instruction>[A-Za-z]+)\b", re.MULTILINE)
_CACHED = re.compile(r"^#(?P<id>\d+) CACHED\s*$", re.MULTILINE)


class HostError(CIError):
    """A build host did not do what was asked (it may be gone: the pool then asks `alive`)."""


class BuildHost(Protocol):
    """What a run needs of a build host; the pool owns its slots and its health."""

    name: str
    capacity: int
    platforms: tuple[str, ...]

    def alive(self) -> bool: ...

    def has_image(self, reference: str) -> bool: ...

    def known_images(self) -> list[KnownImage]: ...

    def build(self, request: BuildRequest, log: IO[str]) -> str: ...

    def tag(self, source: str, target: str) -> None: ...

    def push(self, reference: str, log: IO[str]) -> str: ...

    def untag(self, reference: str) -> None: ...

    def pull(self, reference: str, log: IO[str]) -> None: ...

    def engine(self) -> DockerEngine: ...


class DockerBuildHost:
    """A Docker engine as a build host (python-on-whales through the engine's own client)."""

    def __init__(self, settings: BuildHostSettings, engine: DockerEngine):
        self.name = settings.name
        self.capacity = settings.builds
        self.platforms = settings.platforms
        self.address = settings.address
        self._engine = engine

    def __repr__(self) -> str:
        return f"DockerBuildHost({self.name!r}, {self.address or 'default engine'!r})"

    def engine(self) -> DockerEngine:
        return self._engine

    def alive(self) -> bool:
        """Measured: the engine answers `docker version` now."""
        try:
            self._engine.ping()
        except CIError:
            return False
        return True

    def has_image(self, reference: str) -> bool:
        try:
            return self._engine.image_exists(reference)
        except whales.DockerException as exc:
            raise HostError(f"build host {self.name} did not answer: {_last_line(exc)}") from None

    def known_images(self) -> list[KnownImage]:
        try:
            return self._engine.known_images()
        except whales.DockerException as exc:
            raise HostError(f"build host {self.name} did not answer: {_last_line(exc)}") from None

    def build(self, request: BuildRequest, log: IO[str]) -> str:
        return self._engine.build(request, log)

    def tag(self, source: str, target: str) -> None:
        try:
            self._engine.tag(source, target)
        except whales.DockerException as exc:
            raise HostError(f"tagging {source} on build host {self.name} failed: {_last_line(exc)}") from None

    def push(self, reference: str, log: IO[str]) -> str:
        return self._engine.push_image(reference, log)

    def pull(self, reference: str, log: IO[str]) -> None:
        self._engine.pull_image(reference, log)

    def untag(self, reference: str) -> None:
        """Drop one name of an image (the image stays while it has others); a failure changes nothing."""
        with contextlib.suppress(whales.DockerException):
            self._engine.client.image.remove(reference)


def _last_line(exc: whales.DockerException) -> str:
    text = (exc.stderr or str(exc)).strip()
    return text.splitlines()[-1] if text else f"exit {exc.return_code}"


def cached_steps(build_output: str) -> int:
    """How many Dockerfile steps BuildKit took from a cache (`#N CACHED` in its plain progress).

    A `FROM` step is reported CACHED whenever the base is already present; it is not a cache hit
    of the build, so it is not counted.
    """
    titles = {match["id"]: match["instruction"].upper() for match in _STEP_TITLE.finditer(build_output)}
    return sum(1 for match in _CACHED.finditer(build_output) if titles.get(match["id"], "FROM") != "FROM")
