"""Docker as the site engine: the fallback where no HPC engine is installed (a laptop, the CI box).

The "image file" is a `docker save` archive, so the site layout, promotion and skip logic work
unchanged: converting saves (or copies) the archive, and running loads it (a no-op for layers the
engine already has) and starts `docker run --rm` with the test folder bind-mounted. Loading by
archive rather than by tag means a test runs exactly the promoted bytes, whatever the engine's
tags say meanwhile.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import ClassVar

from ci.engines.base import LAUNCHER_OPTIONS, BaseEngine, Bind, ImageSource, RegistryCredentials, SourceKind

# `docker load` prints "Loaded image: name:tag" or, for an untagged image, "Loaded image ID: sha256:...".
_LOAD = ('ref=$({docker} load -q -i "$1" | sed -n "s/^Loaded image[^:]*: //p" | tail -n 1); '
         '[ -n "$ref" ] || {{ echo "docker load named no image in $1" >&2; exit 125; }}; ')

# A private client configuration for one pull: the login never lands in ~/.docker/config.json.
_LOGIN = ('DOCKER_CONFIG=$(mktemp -d); export DOCKER_CONFIG; trap \'rm -rf "$DOCKER_CONFIG"\' EXIT; '
          'if [ -n "${{CI_REGISTRY_USERNAME:-}}" ]; then printf %s "$CI_REGISTRY_PASSWORD" | '
          '{docker} login --username "$CI_REGISTRY_USERNAME" --password-stdin "$3" >/dev/null; fi; ')


class DockerSiteEngine(BaseEngine):
    """Docker archives run with `docker run`; no SquashFS, no conversion cost beyond `docker save`."""

    name: ClassVar[str] = "docker"
    file_suffix: ClassVar[str] = "tar"
    binaries: ClassVar[tuple[str, ...]] = ("docker",)
    install_hint: ClassVar[str] = "no Docker client on the site host: install docker.io, or choose another engine"

    @property
    def docker(self) -> str:
        return self.settings.binary or self.settings.docker

    def conversion_command(self, source: ImageSource, output: str) -> list[str]:
        if source.kind is SourceKind.DAEMON:
            return [self.docker, "save", "-o", output, source.location]
        if source.kind is SourceKind.ARCHIVE:
            return ["cp", source.location, output]
        docker = shlex.quote(self.docker)
        script = _LOGIN.format(docker=docker) + f'{docker} pull -q "$1" >/dev/null && {docker} save -o "$2" "$1"'
        return ["sh", "-euc", script, "docker-pull", source.location, output, source.registry_host]

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        return {"CI_REGISTRY_USERNAME": credentials.username, "CI_REGISTRY_PASSWORD": credentials.password}

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        """Docker does not pass the caller's environment: `pass_env` names the variables to forward."""
        docker = shlex.quote(self.docker)
        options: list[str] = ["--rm", *self.settings.exec_options]
        for bind in binds:
            options += ["-v", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        for name in pass_env:
            options += ["-e", name]
        run = f'exec {docker} run {shlex.join(options)} "$ref" {shlex.join(argv)}'
        return ["sh", "-c", _LOAD.format(docker=docker) + run, "docker-run", image_file]

    def launcher_helper(self) -> str | None:
        """`$SCMD -B SRC:DST IMAGE CMD` as `docker load` + `docker run --rm -v SRC:DST ... CMD`."""
        docker = shlex.quote(self.docker)
        options = " ".join(shlex.quote(option) for option in ["--rm", *self.settings.exec_options])
        return ("#!/bin/bash\n# containers-ci: SCMD for Docker (generated): singularity exec's grammar run by "
                "docker run\n" + LAUNCHER_OPTIONS +
                'args=(); for ((i = 0; i < ${#binds[@]}; i += 2)); do args+=(-v "${binds[i]}:${binds[i+1]}"); done\n'
                f'ref=$({docker} load -q -i "$image" | sed -n "s/^Loaded image[^:]*: //p" | tail -n 1)\n'
                f'exec {docker} run {options} "${{args[@]}}" "$ref" "$@"\n')
