"""Docker builds through python-on-whales: labels, logs, BuildKit, and the local image inventory.

python-on-whales costs about 0.4 s to import (it builds a hundred pydantic models), and a run with
nothing to build only asks the engine whether it answers and which images it holds: those few
calls go straight to the client's command line here, and python-on-whales is imported on the
first call that needs it (a build, a login, an error to classify).

Where buildx exists (Docker CE on the build VM) it is used; Debian's docker.io 20.10 has no
buildx, so there the classic `docker build` runs with DOCKER_BUILDKIT=1 and its plain progress
is streamed to the image's log file (python-on-whales' `legacy_build` cannot stream BuildKit
output, so that one call is made through the client's own command line and streaming helper).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING

from ci.docker import whales
from ci.errors import BuildError, CIError
from ci.plan import DIGEST_LABEL, NAME_LABEL, TEST_DIGEST_LABEL, KnownImage

if TYPE_CHECKING:
    from python_on_whales import DockerClient


@dataclass(frozen=True)
class BuildRequest:
    """Everything one `docker build` needs, already composed and staged."""

    name: str
    tag: str
    context: Path
    dockerfile: Path
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    platform: str
    no_cache: bool = False
    secrets: tuple[str, ...] = ()  # environment variables handed over as BuildKit secrets (id = the name)
    network: str | None = None  # the network of RUN steps (e.g. host); None: the engine's setting
    cache_from: tuple[str, ...] = ()  # BuildKit cache imports, e.g. type=registry,ref=HOST/REPO:cache
    cache_to: tuple[str, ...] = ()  # BuildKit cache exports, e.g. type=registry,ref=HOST/REPO:cache,mode=max


def image_labels(name: str, version: str, digest: str, test_digest: str, source: str) -> dict[str, str]:
    """OCI annotations plus our digest, so any registry or `docker inspect` can tell what this is."""
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.source": source,
        "org.opencontainers.image.vendor": "containers-ci",
        NAME_LABEL: name,
        DIGEST_LABEL: digest,
        TEST_DIGEST_LABEL: test_digest,
    }


def secret_options(names: Iterable[str]) -> list[str]:
    """`id=NAME,env=NAME` for each secret set in our environment: the client reads the value, argv holds names.

    A secret that is not set is left out, so `RUN --mount=type=secret,id=NAME` sees no file and the
    Dockerfile decides (`required=true` makes it fail; our Spack recipe pushes unsigned, or fails when
    ci.spack.signed asks for a key).
    """
    return [f"id={name},env={name}" for name in names if os.environ.get(name)]


_PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: [0-9]+")


def classic_cache_options(request: BuildRequest, log: IO[str]) -> list[str]:
    """The classic client's form of a registry cache: `--cache-from REF`, and the inline cache.

    Debian's docker.io 20.10 has no buildx, and its `docker build` cannot export a cache to a
    registry (`--cache-to`); BuildKit's inline cache (`BUILDKIT_INLINE_CACHE=1`) writes the cache
    metadata into the image itself, which then goes to the cache ref with the image: mode=min
    (the final stage's layers), said once in the log. Where buildx exists, mode=max applies.
    """
    options: list[str] = []
    for spec in request.cache_from:
        ref = _registry_ref(spec)
        if ref:
            options += ["--cache-from", ref]
    if any(_registry_ref(spec) for spec in request.cache_to):
        options += ["--build-arg", "BUILDKIT_INLINE_CACHE=1"]
        log.write("note: the classic builder exports the cache inline (mode=min), pushed with the image\n")
    return options


def _spec_fields(spec: str) -> dict[str, str]:
    """`type=registry,ref=X` -> {"type": "registry", "ref": "X"} (python-on-whales wants a mapping)."""
    return dict(part.split("=", 1) for part in spec.split(",") if "=" in part)


def _registry_ref(spec: str) -> str | None:
    """`ref` of a `type=registry,ref=...` cache spec (None for other cache types)."""
    fields = _spec_fields(spec)
    return fields.get("ref") if fields.get("type") == "registry" else None


def find_docker_client(preferred: str | None = None) -> list[str]:
    """The client binary to call: the configured one, else the distribution's, else the one on PATH.

    The distribution's client matches the distribution's engine (a newer client found first on
    PATH may lack buildx and the classic builder's BuildKit). Whether buildx is used is decided
    per engine by `DockerEngine.has_buildx`.
    """
    if preferred and preferred != "auto":
        return [preferred]
    for path in ("/usr/bin/docker", shutil.which("docker")):
        if path and os.path.exists(path):
            return [path]
    raise CIError("no docker client found; run `inv local.up` or install docker.io")


def _private_docker_config() -> Path:
    """A 0700 folder with the user's Docker config: config.json copied (0600), the rest linked."""
    folder = Path(tempfile.mkdtemp(prefix="ci-docker-config-"))  # mkdtemp makes it 0700
    source = Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    if source.is_dir():
        for entry in source.iterdir():
            if entry.name == "config.json":
                fd = os.open(folder / "config.json", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(entry.read_bytes())
            else:
                (folder / entry.name).symlink_to(entry)  # cli-plugins, buildx builders, contexts
    return folder


class DockerEngine:
    """A Docker engine, local or remote (DOCKER_HOST=ssh://...), that builds and lists images."""

    def __init__(self, client_call: Sequence[str] | None = None, host: str | None = None, buildkit: bool = True,
                 network: str | None = None):
        self._call = list(client_call or find_docker_client())
        self._host = host
        self._client: DockerClient | None = None
        self.buildkit = buildkit
        self.network = network  # the network of every build's RUN steps (ci.docker.network)
        self._has_buildx: bool | None = None
        self._private_config: Path | None = None

    # ---- registry logins: into a private Docker config folder, never ~/.docker/config.json ----------
    def login(self, server: str, username: str, password: str) -> None:
        """`docker login` (the password on stdin) into this engine's private config folder.

        The folder (0700, under the temporary directory) starts as a copy of the user's Docker
        config (its other logins, plugins and builders stay usable) and is removed by
        `forget_logins` at the end of the run, or at exit: the token never lands in the user's
        ~/.docker/config.json.
        """
        if self._private_config is None:
            self._private_config = _private_docker_config()
            atexit.register(self.forget_logins)
            self._client = None  # the next use builds a client on the private config
        self.client.login(server=server, username=username, password=password)

    @property
    def client(self) -> DockerClient:
        """python-on-whales' client on this engine (and on the private config while logins are held)."""
        if self._client is None:
            self._client = whales.DockerClient(client_call=self._call, host=self._host, config=self._private_config)
        return self._client

    @property
    def docker_cmd(self) -> list[str]:
        """The client's command line for this engine, as python-on-whales composes it (config, then host)."""
        command = list(self._call)
        if self._private_config is not None:
            command += ["--config", str(self._private_config)]
        if self._host:
            command += ["--host", self._host]
        return command

    def _docker(self, *args: str) -> str:
        """One short docker call, its output without the last newline; a failure raises the same
        python-on-whales exception (`NoSuchImage`, `DockerException`, ...) its own calls would."""
        command = [*self.docker_cmd, *args]
        done = subprocess.run(command, capture_output=True, check=False)
        if done.returncode != 0:
            from python_on_whales.utils import get_docker_exception_type  # the failure path only

            raise get_docker_exception_type(done.stderr)(command, done.returncode, done.stdout, done.stderr)
        return done.stdout.decode(errors="replace").removesuffix("\n")

    @property
    def config_dir(self) -> Path | None:
        """The private config folder while logins are held (None: the user's own Docker config)."""
        return self._private_config

    def forget_logins(self) -> None:
        """Remove the private config folder and its tokens; later calls use the user's config again."""
        folder, self._private_config = self._private_config, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
            self._client = None

    @property
    def has_buildx(self) -> bool:
        if self._has_buildx is None:
            try:
                self._has_buildx = bool(self.client.buildx.is_installed())
            except whales.DockerException:
                self._has_buildx = False
        return self._has_buildx

    def ping(self) -> None:
        """Fail with a helpful message when the engine does not answer."""
        try:
            self._docker("version", "--format", "{{.Server.Version}}")
        except whales.DockerException as exc:
            raise CIError(
                "the Docker engine does not answer; start it with `inv local.up` (or check DOCKER_HOST): "
                + (exc.stderr or str(exc)).strip().splitlines()[-1]
            ) from None

    def known_images(self) -> list[KnownImage]:
        """Images carrying our digest label, with their tags (one `docker image ls` + one inspect).

        Another process may remove an image between the listing and the inspection; the listing
        is then simply taken again.
        """
        for attempt in range(5):
            try:
                return self._known_images()
            except whales.NoSuchImage:
                if attempt == 4:
                    raise
        return []

    def _known_images(self) -> list[KnownImage]:
        """Two docker calls whatever the count: the listing, then one inspect of every listed image
        (python-on-whales' Image objects would each inspect themselves again)."""
        listing = self._docker("image", "list", "--quiet", "--no-trunc", "--filter", f"label={DIGEST_LABEL}")
        listed = sorted(set(listing.split()))  # one line per tag: an image with two tags is listed twice
        if not listed:
            return []
        # an image gone meanwhile: NoSuchImage, and known_images retries
        lines = self._docker("image", "inspect", "--format", "{{json .Config.Labels}}\t{{json .RepoTags}}",
                             *listed).splitlines()
        out: list[KnownImage] = []
        for line in lines:
            labels_text, _, tags_text = line.partition("\t")
            labels = json.loads(labels_text or "null") or {}
            tags = json.loads(tags_text or "null") or []
            out.append(KnownImage(name=str(labels.get(NAME_LABEL, "")), digest=str(labels.get(DIGEST_LABEL, "")),
                                  tags=tuple(str(tag) for tag in tags)))
        return out

    def labels(self, reference: str) -> dict[str, str] | None:
        """The labels of an image this engine holds ({} when it has none); None when it holds no such image."""
        try:
            text = self._docker("image", "inspect", "--format", "{{json .Config.Labels}}", reference)
        except whales.NoSuchImage:
            return None
        found = json.loads(text or "null") or {}
        return {str(key): str(value) for key, value in found.items()} if isinstance(found, dict) else {}

    def image_exists(self, reference: str) -> bool:
        return self.labels(reference) is not None

    def tag(self, source: str, target: str) -> None:
        self.client.image.tag(source, target)

    def image_digest_label(self, reference: str) -> str | None:
        return (self.labels(reference) or {}).get(DIGEST_LABEL)

    def build(self, request: BuildRequest, log: IO[str]) -> str:
        """Build one image, streaming its output to `log`; return the image id."""
        try:
            if self.has_buildx:
                return self._build_buildx(request, log)
            return self._build_classic(request, log)
        except whales.DockerException as exc:
            raise BuildError(f"docker build of {request.name} failed (exit {exc.return_code}); "
                             f"see {log.name}") from None

    def _build_buildx(self, request: BuildRequest, log: IO[str]) -> str:
        network = request.network or self.network
        lines = self.client.buildx.build(
            request.context, file=request.dockerfile, tags=[request.tag], labels=dict(request.labels),
            build_args=dict(request.build_args), platforms=[request.platform], load=True,
            cache=not request.no_cache, progress="plain", stream_logs=True,
            secrets=secret_options(request.secrets), network=network,
            cache_from=[_spec_fields(spec) for spec in request.cache_from] or None,
            cache_to=request.cache_to[0] if request.cache_to else None,
        )
        for line in lines:  # type: ignore[union-attr]
            log.write(line if line.endswith("\n") else line + "\n")
            log.flush()
        return str(self.client.image.inspect(request.tag).id)

    def _build_classic(self, request: BuildRequest, log: IO[str]) -> str:
        with tempfile.TemporaryDirectory(prefix="ci-iid-") as scratch:
            iidfile = Path(scratch) / "iid"
            command = [*self.docker_cmd, "build", "--iidfile", str(iidfile)]
            command += ["--file", str(request.dockerfile), "--tag", request.tag]
            for name, value in request.build_args.items():
                command += ["--build-arg", f"{name}={value}"]
            for name, value in request.labels.items():
                command += ["--label", f"{name}={value}"]
            if request.no_cache:
                command.append("--no-cache")
            command += classic_cache_options(request, log) if self.buildkit else []
            network = request.network or self.network
            if network:
                command += ["--network", network]
            env: dict[str, str] = {}
            if self.buildkit:
                env = {"DOCKER_BUILDKIT": "1", "BUILDKIT_PROGRESS": "plain"}
                command += ["--platform", request.platform]
                for option in secret_options(request.secrets):
                    command += ["--secret", option]
            elif request.secrets:
                raise BuildError(f"{request.name} needs BuildKit for its secrets ({', '.join(request.secrets)}); "
                                 "set ci.docker.buildkit: true")
            else:
                env = {"DOCKER_BUILDKIT": "0"}
            command.append(str(request.context))
            for _, raw in whales.stream_stdout_and_stderr(command, env=env):
                log.write(raw.decode(errors="replace"))
                log.flush()
            return iidfile.read_text().strip()

    def push_image(self, reference: str, log: IO[str]) -> str:
        """`docker push reference` (its output to `log`); return the manifest digest the registry stored."""
        digest = ""
        command = [*self.docker_cmd, "push", reference]
        try:
            for _, raw in whales.stream_stdout_and_stderr(command):
                line = raw.decode(errors="replace")
                log.write(line)
                found = _PUSHED_DIGEST.search(line)
                if found:
                    digest = found.group(1)
        except whales.DockerException as exc:
            raise BuildError(f"push of {reference} failed (exit {exc.return_code}); see {log.name}") from None
        finally:
            log.flush()
        if not digest:
            raise BuildError(f"push of {reference} did not report a digest; see {log.name}")
        return digest

    def pull_image(self, reference: str, log: IO[str]) -> None:
        """`docker pull reference` (by digest, as the build pool asks), its output to `log`."""
        command = [*self.docker_cmd, "pull", reference]
        try:
            for _, raw in whales.stream_stdout_and_stderr(command):
                log.write(raw.decode(errors="replace"))
        except whales.DockerException as exc:
            raise BuildError(f"pull of {reference} failed (exit {exc.return_code}); see {log.name}") from None
        finally:
            log.flush()

    def import_rootfs(self, tarball: Path, tag: str, changes: Iterable[str] = ()) -> None:
        self.client.image.import_(tarball, tag=tag, changes=list(changes))

    def remove(self, references: Iterable[str]) -> None:
        refs = list(references)
        if refs:
            self.client.image.remove(refs, force=True)
