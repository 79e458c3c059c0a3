"""The pool of build hosts: slots per host, placement, the shared store, and failover.

Each host's capacity is its own resource: the pool hands a build a slot on one host (`acquire`)
and takes it back (`release`), so two hosts of two slots run four builds. Placement asks the
hosts, it does not guess: a free host that holds the image's parents now (`docker image inspect`)
is preferred (placement `parent`), or avoided (`away`, which sends every child through the
registry: a check that the shared store alone suffices). A host that holds a parent but has no
free slot is not waited for: another free host gets the parent from the build registry.

The build registry is the shared store: every built image is pushed there (`publish`) and its
manifest digest recorded; a host that lacks an image a build needs gets it by that digest, never
by a mutable tag (`ensure`), and the digest is what the build step records. Images made outside
the run (the local base image, an earlier run's parent) that one host holds are published from
there the first time another host needs them. The BuildKit cache lives in the same registry, one
ref per image and platform (`cache_options`).

A host that stops answering is marked down (`mark_down`); the build step then tries another
host, and later placements skip it. Everything here is thread-safe: the executor runs many builds
at once, each on its own thread.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO

from ci.buildhosts.host import BuildHost, HostError
from ci.config.build_hosts import BuildPoolSettings
from ci.docker.engine import DockerEngine
from ci.errors import BuildError, CIError
from ci.plan import KnownImage
from ci.shutdown import CancelToken

Say = Callable[..., None]
_UNSAFE = re.compile(r"[^a-z0-9._/-]+")


class NoBuildHost(CIError):
    """No live host of the pool can build what is asked (all down, or none has the platform)."""


@dataclass
class _HostState:
    host: BuildHost
    busy: int = 0
    down: str | None = None  # why it was marked down
    builds: int = 0


@dataclass(frozen=True)
class Placement:
    """Where a build went and why: the host, the parents it already held, how long it waited for a slot."""

    host: BuildHost
    held: tuple[str, ...] = ()
    waited: float = 0.0


@dataclass
class PoolRecord:
    """What the pool learnt during a run: digests in the build registry, who holds what."""

    digests: dict[str, str] = field(default_factory=dict)  # local tag -> manifest digest in the build registry
    holders: dict[str, set[str]] = field(default_factory=dict)  # local tag -> host names known to hold it


def registry_repository(pool: BuildPoolSettings, tag: str) -> str:
    """Where an image tag lives in the build registry: `<registry>/<repository>/<its repository>`.

    The image's own repository (with any registry prefix) becomes a path under the pool's
    repository: lowercased, every character a reference cannot hold replaced by '-'.
    """
    if pool.registry is None:
        raise CIError("this needs a build registry (ci.build_pool.registry)")
    name = tag.rsplit(":", 1)[0] if ":" in tag.rsplit("/", 1)[-1] else tag
    parts = [_component(part) for part in _UNSAFE.sub("-", name.lower()).split("/")]
    path = "/".join(part for part in parts if part and part not in (".", "..")) or "image"
    return f"{pool.registry}/{pool.repository}/{path}"


def _component(part: str) -> str:
    """One path component as a reference allows: separators '.', '_', '__' or dashes, never a mix or '..'."""
    def separator(match: re.Match[str]) -> str:
        run = match.group(0)
        return run if run == "__" or set(run) == {"-"} else "-"

    return re.sub(r"[._-]{2,}", separator, part).strip("._-")


def registry_reference(pool: BuildPoolSettings, tag: str) -> str:
    """The image's reference by tag in the build registry (what `publish` pushes)."""
    last = tag.rsplit("/", 1)[-1]
    version = last.rsplit(":", 1)[1] if ":" in last else "latest"
    return f"{registry_repository(pool, tag)}:{_UNSAFE.sub('-', version)[:128]}"


def cache_reference(pool: BuildPoolSettings, tag: str, platform: str) -> str:
    """One BuildKit cache ref per image and platform, stable across its versions and digests."""
    return f"{registry_repository(pool, tag)}:cache-{platform.replace('/', '-')}"


class BuildPool:
    """Slots on several build hosts, the build registry between them, and who is down."""

    def __init__(self, hosts: Sequence[BuildHost], settings: BuildPoolSettings, *, say: Say | None = None,
                 cancel: CancelToken | None = None):
        if not hosts:
            raise CIError("a build pool needs at least one host (ci.build_hosts)")
        self.settings = settings
        self._states = {host.name: _HostState(host) for host in hosts}
        self._order = [host.name for host in hosts]
        self._say = say or (lambda *_args, **_kwargs: None)
        self.cancel = cancel or CancelToken()
        self.record = PoolRecord()
        self._lock = threading.Condition()

    # ---- the hosts --------------------------------------------------------------------------------
    @property
    def hosts(self) -> list[BuildHost]:
        return [self._states[name].host for name in self._order]

    @property
    def shared(self) -> bool:
        """True when images go through the build registry (it is configured)."""
        return self.settings.registry is not None

    @property
    def capacity(self) -> int:
        return sum(state.host.capacity for state in self._states.values())

    def live(self) -> list[BuildHost]:
        with self._lock:
            return [self._states[name].host for name in self._order if self._states[name].down is None]

    def host(self, name: str) -> BuildHost | None:
        state = self._states.get(name)
        return state.host if state is not None else None

    def check(self) -> list[str]:
        """Ask every host whether it answers; mark the silent ones down. Fails when none answers."""
        for host in self.hosts:
            if not host.alive():
                self.mark_down(host, "it did not answer at the start of the run")
        live = self.live()
        if not live:
            names = ", ".join(self._order)
            raise NoBuildHost(f"no build host answers ({names}): the Docker engine does not answer; start it "
                              "with `inv local.up`, or check ci.docker.host / the addresses in ci.build_hosts")
        return [host.name for host in live]

    def mark_down(self, host: BuildHost, reason: str) -> None:
        with self._lock:
            state = self._states[host.name]
            if state.down is not None:
                return
            state.down = reason
            self._lock.notify_all()
        self._say(f"build host {host.name} is down ({reason}); its builds go to the other hosts",
                  level="warning", host=host.name)

    def is_down(self, host: BuildHost) -> bool:
        with self._lock:
            return self._states[host.name].down is not None

    def usage(self) -> dict[str, int]:
        """Builds each host ran so far in this run."""
        with self._lock:
            return {name: self._states[name].builds for name in self._order}

    # ---- placement --------------------------------------------------------------------------------
    def _supports(self, host: BuildHost, platform: str) -> bool:
        return not host.platforms or platform in host.platforms

    def acquire(self, platform: str, parents: Sequence[str] = (), cancel: CancelToken | None = None) -> Placement:
        """A slot on a live host that can build `platform`: free ones first, those holding `parents` preferred.

        Waits (honouring `cancel`) while every suitable host is full; raises NoBuildHost when no
        live host supports the platform any more.
        """
        cancel = cancel or self.cancel
        waited = 0.0
        while True:
            cancel.check()
            with self._lock:
                suitable = [self._states[n] for n in self._order
                            if self._states[n].down is None and self._supports(self._states[n].host, platform)]
                if not suitable:
                    raise NoBuildHost(self._no_host_message(platform))
                free = [state.host for state in suitable if state.busy < state.host.capacity]
            if not free:
                with self._lock:
                    self._lock.wait(timeout=0.5)
                waited += 0.5
                continue
            # Ask only when there is a choice to make (one free host gets the build anyway).
            held = {host.name: self._held(host, parents) for host in free} if parents and len(free) > 1 else {}
            ranked = sorted(free, key=lambda host: self._score(host, held.get(host.name, ())))
            with self._lock:
                for host in ranked:
                    state = self._states[host.name]
                    if state.down is None and state.busy < host.capacity:
                        state.busy += 1
                        state.builds += 1
                        return Placement(host, tuple(held.get(host.name, ())), waited)
            # every ranked host filled up while we asked them: look again

    def release(self, host: BuildHost) -> None:
        with self._lock:
            state = self._states[host.name]
            state.busy = max(0, state.busy - 1)
            self._lock.notify_all()

    def _score(self, host: BuildHost, held: Sequence[str]) -> tuple[float, float, int]:
        state = self._states[host.name]
        holding = len(held) if self.settings.placement == "parent" else -len(held)
        return -holding, state.busy / host.capacity, self._order.index(host.name)

    def _held(self, host: BuildHost, tags: Sequence[str]) -> list[str]:
        """The `tags` this host holds now, asked of the host (a silent host holds nothing)."""
        found = []
        for tag in tags:
            try:
                if host.has_image(tag):
                    found.append(tag)
                    self._remember(tag, host)
            except HostError:
                return []
        return found

    def _no_host_message(self, platform: str) -> str:
        able = [n for n in self._order if self._supports(self._states[n].host, platform)]
        if not able:
            return (f"no build host builds {platform} (ci.build_hosts lists {', '.join(self._order)}); "
                    f"add {platform} to a host's platforms")
        reasons = "; ".join(f"{n}: {self._states[n].down}" for n in able)
        return f"every build host for {platform} is down ({reasons})"

    # ---- the shared store -------------------------------------------------------------------------
    def _remember(self, tag: str, host: BuildHost) -> None:
        with self._lock:
            self.record.holders.setdefault(tag, set()).add(host.name)

    def digest_of(self, tag: str) -> str | None:
        with self._lock:
            return self.record.digests.get(tag)

    def publish(self, host: BuildHost, tag: str, log: IO[str]) -> str | None:
        """Push `tag` from `host` to the build registry; record and return its manifest digest.

        None without a build registry (a pool of one engine works as before).
        """
        self._remember(tag, host)
        if not self.shared:
            return None
        reference = registry_reference(self.settings, tag)
        host.tag(tag, reference)
        try:
            digest = host.push(reference, log)
        finally:
            host.untag(reference)  # only the extra name: the image keeps its own tag
        with self._lock:
            self.record.digests[tag] = digest
        return digest

    def ensure(self, host: BuildHost, tag: str, log: IO[str]) -> str | None:
        """Make `tag` present on `host` for a build (a parent, a base, a `COPY --from` image).

        Present already: nothing to do (None). Else, through the build registry by digest: the
        digest recorded in this run, or the image published first from a live host that holds it.
        None when no host holds it either (BuildKit then resolves it as it would anyway).
        Returns the digest the image came by.
        """
        if not self.shared:  # one engine, nothing shared: the image is there or BuildKit resolves it
            return None
        if host.has_image(tag):
            self._remember(tag, host)
            return None
        digest = self.digest_of(tag)
        if digest is None:
            source = self._holder(tag, exclude=host)
            if source is not None:
                log.write(f"{tag}: not on {host.name}; publishing it from {source.name} to the build registry\n")
                digest = self.publish(source, tag, log)
            else:  # built by another process (a workflow job on another VM): the registry knows its digest
                digest = self.resolve(tag)
                if digest is not None:
                    with self._lock:
                        self.record.digests[tag] = digest
            if digest is None:
                return None
        by_digest = f"{registry_repository(self.settings, tag)}@{digest}"
        log.write(f"{tag}: pulling {by_digest} onto {host.name}\n")
        host.pull(by_digest, log)
        host.tag(by_digest, tag)
        self._remember(tag, host)
        return digest

    def resolve(self, tag: str) -> str | None:
        """The manifest digest the build registry holds for `tag` now (None: it holds none).

        Our tags end in the definition's digest, so what this returns is the image that exact
        definition made; the pull that follows is by this digest, never by the tag.
        """
        if not self.shared:
            return None
        from ci.docker.oci import OCIClient, RegistryError  # httpx costs 70 ms: only pools with a registry pay

        repository, _, version = registry_reference(self.settings, tag).rpartition(":")
        path = repository.split("/", 1)[1]
        try:
            with OCIClient(self.settings.registry or "", insecure=self.settings.scheme == "http",
                           timeout=30.0) as registry:
                return registry.manifest_digest(path, version)
        except RegistryError as error:
            raise HostError(f"the build registry {self.settings.registry}: {error}") from None

    def _holder(self, tag: str, exclude: BuildHost | None = None) -> BuildHost | None:
        """A live host that holds `tag` now (the remembered ones asked first)."""
        with self._lock:
            remembered = set(self.record.holders.get(tag, ()))
        candidates = sorted(self.live(), key=lambda h: (h.name not in remembered, self._order.index(h.name)))
        for candidate in candidates:
            if exclude is not None and candidate.name == exclude.name:
                continue
            try:
                if candidate.has_image(tag):
                    self._remember(tag, candidate)
                    return candidate
            except HostError:
                continue
        return None

    def engine_holding(self, tag: str, log: IO[str]) -> DockerEngine:
        """The engine of a live host that holds `tag` (pulled onto one by digest if only the registry has it).

        The transfer step pushes from there: the host that built the image, or any other once that
        one is gone.
        """
        holder = self._holder(tag)
        if holder is not None:
            return holder.engine()
        for host in self.live():
            try:
                if self.ensure(host, tag, log) is not None:
                    return host.engine()
            except (HostError, BuildError):
                continue
        raise NoBuildHost(f"no live build host holds {tag}, and the build registry has no digest of it")

    def holder_of_digest(self, digest: str) -> tuple[BuildHost, str] | None:
        """A live host holding an image with our digest label, and one of its tags (for a re-tag)."""
        for host in self.live():
            try:
                for known in host.known_images():
                    if known.digest == digest and known.tags:
                        return host, known.tags[0]
            except HostError:
                continue
        return None

    def known_images(self) -> list[KnownImage]:
        """Every live host's images with our digest label: what the plan counts as built."""
        seen: dict[tuple[str, str], set[str]] = {}
        for host in self.live():
            try:
                images = host.known_images()
            except HostError:
                continue
            for known in images:
                seen.setdefault((known.name, known.digest), set()).update(known.tags)
        # An image left without a name (a parent pulled by digest whose tag was removed) cannot be
        # re-tagged by name: it does not count as built.
        return [KnownImage(name=name, digest=digest, tags=tuple(sorted(tags)))
                for (name, digest), tags in seen.items() if tags]

    def cache_options(self, tag: str, platform: str, no_cache: bool = False) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(cache_from, cache_to) BuildKit specs for one image; empty without a registry or with no cache."""
        if not self.shared or not self.settings.cache:
            return (), ()
        ref = cache_reference(self.settings, tag, platform)
        cache_to = (f"type=registry,ref={ref},mode=max",)
        return ((), cache_to) if no_cache else ((f"type=registry,ref={ref}",), cache_to)

    def export_cache(self, host: BuildHost, tag: str, platform: str, log: IO[str]) -> None:
        """The classic builder's cache goes inline in the image: push the image to its cache ref too.

        (buildx exported it to the ref itself, with mode=max.)
        """
        if host.engine().has_buildx or not self.shared or not self.settings.cache:
            return
        ref = cache_reference(self.settings, tag, platform)
        host.tag(tag, ref)
        try:
            host.push(ref, log)
        finally:
            host.untag(ref)
