"""The OpenStack helper image (this package's Dockerfile): built only when its inputs change.

The build context is staged from this project: the Dockerfile, `src/` (pyproject.toml, README.md,
tasks.py, invoke.yaml and the `ci` package, caches left out) and `certs/` (extra CA certificates).
The digest over that context and the build arguments becomes the image's label and tag
(`<registry prefix>containers-ci/openstack:<digest12>`, plus `:latest`), so "is it built?" is one
`docker image inspect`, and an unchanged image is neither rebuilt nor pushed again.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ci.config.settings import HelperImageSettings, Settings
from ci.definitions.context import context_digest
from ci.docker import whales
from ci.docker.engine import DockerEngine
from ci.errors import BuildError, ConfigError

DOCKERFILE = Path(__file__).resolve().parent / "Dockerfile"
HELPER_DIGEST_LABEL = "io.containers-ci.helper-digest"
RECIPE_VERSION = "1"  # bump when the staging recipe changes
SOURCE_FILES = ("pyproject.toml", "README.md", "tasks.py", "invoke.yaml")

Say = Callable[[str], None]


def helper_settings(settings: Settings) -> HelperImageSettings:
    """`ci.openstack_image`, checked when the settings were loaded."""
    return settings.helper_image


def stage_context(project_dir: Path, destination: Path, certificates: tuple[Path, ...]) -> None:
    """Lay out the build context: Dockerfile, src/ (this project) and certs/."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(DOCKERFILE, destination / "Dockerfile")
    source = destination / "src"
    source.mkdir()
    for name in SOURCE_FILES:
        if (project_dir / name).is_file():
            shutil.copy2(project_dir / name, source / name)
    if not (source / "README.md").exists():
        (source / "README.md").write_text("containers-ci\n", encoding="utf-8")
    shutil.copytree(project_dir / "ci", source / "ci",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", ".mypy_cache"))
    certs = destination / "certs"
    certs.mkdir()
    for number, path in enumerate(certificates):
        if not path.is_file():
            raise ConfigError(f"CA certificate {path} (ci.openstack_image.ca_certificates) does not exist")
        shutil.copy2(path, certs / f"{number:02d}-{path.stem}.crt")


def helper_digest(context: Path, build_args: Mapping[str, str]) -> str:
    digest = hashlib.sha256()
    digest.update(f"recipe {RECIPE_VERSION}\n".encode())
    digest.update(context_digest(context).encode())
    digest.update(json.dumps(dict(sorted(build_args.items()))).encode())
    return digest.hexdigest()


@dataclass
class HelperImageResult:
    tag: str
    digest: str
    action: str  # "present" or "built"
    pushed: bool = False
    log: Path | None = None

    def describe(self) -> str:
        what = {"present": "is up to date", "built": "built"}[self.action]
        return f"{self.tag} {what}" + (" and pushed" if self.pushed else "")


def ensure_helper_image(engine: DockerEngine, settings: Settings, *, force: bool = False,
                        push: bool | None = None, say: Say = lambda _: None) -> HelperImageResult:
    """Build the helper image unless an image with the same digest exists; push it when asked."""
    config = helper_settings(settings)
    build_args = {"BASE_IMAGE": config.base_image, **config.build_args}
    log_dir = settings.state_dir / "openstack-image"
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ci-openstack-image-") as scratch:
        context = Path(scratch) / "context"
        stage_context(settings.project_dir, context, config.ca_certificates)
        digest = helper_digest(context, build_args)
        tag = f"{config.repository}:{digest[:12]}"
        latest = f"{config.repository}:latest"
        result = HelperImageResult(tag=tag, digest=digest, action="present")
        if force or not _has_digest(engine, tag, digest):
            if not engine.image_exists(config.base_image):
                if config.base_image != settings.base_image.tag:
                    raise ConfigError(f"base image {config.base_image} (ci.openstack_image.base_image) is "
                                      "not present and no registry can be assumed; pull or build it first")
                from ci.local.base_image import ensure_base_image

                say(ensure_base_image(engine, settings.base_image))
            result.log = log_dir / "build.log"
            say(f"building {tag} (log: {result.log})")
            _build(engine, context, tag, digest, build_args, config.network, result.log)
            result.action = "built"
        engine.tag(tag, latest)
        _untag_older(engine, config.repository, keep=(tag, latest))
    should_push = push if push is not None else (config.push if config.push is not None
                                                 else bool(settings.registry_prefix))
    if should_push:
        try:
            engine.client.image.push([tag, latest], quiet=True)
        except whales.DockerException as exc:
            detail = (exc.stderr or str(exc)).strip().splitlines()[-1:] or [""]
            raise BuildError(f"pushing {tag} failed: {detail[0]}; is the registry up and are you logged in "
                             "(`docker login`)?") from None
        result.pushed = True
    return result


def _untag_older(engine: DockerEngine, repository: str, keep: tuple[str, ...]) -> None:
    """Drop the local tags of earlier helper builds, so they do not pile up (the registry keeps them)."""
    older = [reference for image in engine.client.image.list(filters=[("label", HELPER_DIGEST_LABEL)])
             for reference in image.repo_tags or []
             if reference.rsplit(":", 1)[0] == repository and reference not in keep]
    for reference in older:
        try:
            engine.client.image.remove(reference)
        except whales.DockerException:
            continue  # still used by a container: leave it


def _has_digest(engine: DockerEngine, tag: str, digest: str) -> bool:
    return (engine.labels(tag) or {}).get(HELPER_DIGEST_LABEL) == digest


def _build(engine: DockerEngine, context: Path, tag: str, digest: str, build_args: Mapping[str, str],
           network: str | None, log_path: Path) -> None:
    command = [*engine.docker_cmd, "build", "--tag", tag, "--file",
               str(context / "Dockerfile"), "--label", f"{HELPER_DIGEST_LABEL}={digest}",
               "--label", "org.opencontainers.image.title=containers-ci OpenStack helper",
               "--label", "org.opencontainers.image.vendor=containers-ci"]
    for name, value in build_args.items():
        command += ["--build-arg", f"{name}={value}"]
    if network:
        command += ["--network", network]
    command.append(str(context))
    env = {"DOCKER_BUILDKIT": "1" if engine.buildkit else "0", "BUILDKIT_PROGRESS": "plain"}
    with log_path.open("w", encoding="utf-8") as log:
        try:
            for _, raw in whales.stream_stdout_and_stderr(command, env=env):
                log.write(raw.decode(errors="replace"))
                log.flush()
        except whales.DockerException as exc:
            raise BuildError(f"building {tag} failed (exit {exc.return_code}); see {log_path}") from None
