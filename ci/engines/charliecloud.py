"""Charliecloud: SquashFS images made with `ch-convert`, run with `ch-run`. Real on this machine.

`ch-convert` (0.31) passes mksquashfs a fixed option list (`-b 65536 -noappend -all-root ...`)
and no compressor, so its SquashFS files are always gzip, the slowest choice (see
ci.engines.base.Compression); neither an option nor a variable changes that, and its script puts its own folder first on
PATH, so a wrapper cannot intercept mksquashfs either. So:

- compression "default": plain `ch-convert -i docker -o squash IMAGE out.sqfs` (the reference);
- a compressor configured: the image is unpacked into a folder the way ch-convert would leave it
  (the image's environment in ch/environment, ch-run's mount points), and mksquashfs runs on it
  with ch-convert's own options plus `-comp ...`. From the Docker engine the folder comes from
  `docker save` + `flatten.py`, 2.6x faster than `ch-convert -o dir` (which exports, gzips and
  unpacks a tarball); from a registry, `ch-image pull` + `ch-convert -i ch-image -o dir`.

A `docker save` archive (what a transfer ships) is always unpacked by `flatten.py`: ch-convert
cannot read layered archives, and a login node has no Docker engine to load them into.
`ch-image` speaks HTTPS only, so from a plain-http registry (the loopback one of the local
default) the host's Docker engine pulls and saves the image instead, when there is one.

Running: `ch-run --set-env -b SRC:/mnt/N image.sqfs -- cmd`; a SquashFS
image is read-only, so binds land on the /mnt/0-9 mount points every Charliecloud image has.
`ch-run` needs `USER` set; the job script sets it when the batch environment does not.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from importlib import resources
from typing import ClassVar

from ci.engines.base import (
    LAUNCHER_OPTIONS,
    BaseEngine,
    Bind,
    ImageSource,
    RegistryCredentials,
    SourceKind,
    with_path_prefix,
)
from ci.errors import EngineError
from ci.hosts import Host

# ch-convert's own mksquashfs options (cv_dir_squash in /usr/bin/ch-convert, 0.31); -no-progress
# keeps the log readable.
MKSQUASHFS_OPTIONS = ("-b", "65536", "-noappend", "-all-root", "-no-progress")
MOUNT_POINTS = 10  # /mnt/0 .. /mnt/9 exist in every image ch-convert or flatten.py makes


class CharliecloudEngine(BaseEngine):
    """SquashFS images for Charliecloud (unprivileged, no setuid helper, no daemon)."""

    name: ClassVar[str] = "charliecloud"
    file_suffix: ClassVar[str] = "sqfs"
    binaries: ClassVar[tuple[str, ...]] = ("ch-convert", "ch-run", "mksquashfs")
    install_hint: ClassVar[str] = ("Charliecloud is not complete on the site host: install charliecloud, "
                                   "squashfs-tools and squashfuse (Debian), or load its module")

    @property
    def path_prefix(self) -> str:
        """Debian's python3 (with python3-lark) before any pyenv/conda one, for ch-image."""
        return "/usr/bin" if self.settings.path_prefix is None else self.settings.path_prefix

    @property
    def ch_run(self) -> str:
        return self.settings.binary or "ch-run"

    # -- conversion ---------------------------------------------------------------------------

    @staticmethod
    def scratch_dir(output: str) -> str:
        return f"{output}.d"

    @staticmethod
    def helper_path(output: str) -> str:
        return f"{output}.flatten.py"

    def _tmp(self, output: str) -> str:
        """ch-convert's scratch space: beside the output (the site's file system), not /var/tmp."""
        return self.settings.tmp_dir or (output.rsplit("/", 1)[0] if "/" in output else ".")

    def _pack(self) -> str:
        """Shell text that packs folder "$dir" into "$out" with the configured compressor."""
        if self.settings.compression is None:
            return 'ch-convert --tmp "$tmp" -i dir -o squash "$dir" "$out"'
        options = " ".join([*MKSQUASHFS_OPTIONS, *self.settings.compression.mksquashfs_args()])
        return f'mksquashfs "$dir" "$out" {options}'

    def conversion_command(self, source: ImageSource, output: str) -> list[str]:
        tmp, scratch = self._tmp(output), self.scratch_dir(output)
        docker = shlex.quote(self.settings.docker)
        if source.kind is SourceKind.REGISTRY and source.plain_http:
            # ch-image speaks HTTPS only; where a Docker engine runs (the local default) it pulls instead.
            # With credentials, the pull logs in first, into a Docker config of its own removed at exit.
            login = ('if [ -n "${CH_IMAGE_USERNAME:-}" ]; then DOCKER_CONFIG=$(mktemp -d); export DOCKER_CONFIG; '
                     'trap \'rm -rf "$DOCKER_CONFIG"\' EXIT; printf %s "$CH_IMAGE_PASSWORD" | '
                     f'{docker} login --username "$CH_IMAGE_USERNAME" --password-stdin "$5" >/dev/null; fi; ')
            fetch = (f'command -v {docker} >/dev/null || {{ echo "ch-image cannot pull from a plain-http registry '
                     'and there is no docker here to do it; convert from the docker archive instead, or give the '
                     f'registry TLS" >&2; exit 127; }}; {login}{docker} pull -q "$src" >/dev/null; '
                     f'{docker} save -o "$dir.tar" "$src"; python3 "$out.flatten.py" "$dir.tar" "$dir"; '
                     'rm -f "$dir.tar"')
        elif source.kind is SourceKind.DAEMON:
            if self.settings.compression is None:
                argv = ["ch-convert", "--tmp", tmp, "-i", "docker", "-o", "squash", source.location, output]
                return with_path_prefix(argv, self.path_prefix)
            # `docker save` + flatten.py is 2.6x faster than `ch-convert -i docker -o dir`, which
            # exports, gzips and unpacks a tarball (30 s against 11.4 s for a 690 MB image here).
            fetch = (f'{docker} save -o "$dir.tar" "$src"; python3 "$out.flatten.py" "$dir.tar" "$dir"; '
                     'rm -f "$dir.tar"')
        elif source.kind is SourceKind.ARCHIVE:
            fetch = 'python3 "$out.flatten.py" "$src" "$dir"'  # staged by prepare(): helper_path(output)
        else:
            fetch = 'ch-image pull "$src"; ch-convert --tmp "$tmp" -i ch-image -o dir "$src" "$dir"'
        path = f'PATH={shlex.quote(self.path_prefix)}:"$PATH"; ' if self.path_prefix else ""
        script = f'{path}tmp=$1 src=$2 dir=$3 out=$4; rm -rf "$dir"; {fetch}; {self._pack()}; rm -rf "$dir"'
        pulled = [source.registry_host] if source.kind is SourceKind.REGISTRY and source.plain_http else []
        return ["sh", "-euc", script, "ch-convert", tmp, source.location, scratch, output, *pulled]

    def conversion_env(self, source: ImageSource) -> dict[str, str]:
        return {}

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        return {"CH_IMAGE_AUTH": "yes", "CH_IMAGE_USERNAME": credentials.username,
                "CH_IMAGE_PASSWORD": credentials.password}

    def prepare(self, host: Host, source: ImageSource, output: str) -> None:
        uses_flatten = source.kind is SourceKind.ARCHIVE or (source.kind is SourceKind.REGISTRY and source.plain_http) \
            or (source.kind is SourceKind.DAEMON and self.settings.compression is not None)
        if uses_flatten:
            helper = resources.files("ci.engines").joinpath("flatten.py").read_text(encoding="utf-8")
            host.write_text(self.helper_path(output), helper)

    def cleanup(self, host: Host, output: str) -> None:
        scratch = self.scratch_dir(output)
        host.run(["rm", "-rf", output, scratch, f"{scratch}.tar", self.helper_path(output)], check=False)

    # -- running ------------------------------------------------------------------------------

    def guest_path(self, index: int, host_path: str) -> str:
        if not 0 <= index < MOUNT_POINTS:
            raise EngineError(f"charliecloud images have {MOUNT_POINTS} bind mount points (/mnt/0-9); "
                              f"bind {index + 1} folders is too many: bind a common parent instead")
        return f"/mnt/{index}"

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        """`--set-env` applies the image's ENV (from ch/environment), as Docker and Apptainer do."""
        command = [self.ch_run, "--set-env", *self.settings.exec_options]
        for bind in binds:
            command += ["-b", f"{bind.source}:{bind.target}"]
        return [*command, image_file, "--", *argv]

    def launcher_helper(self) -> str | None:
        """`$SCMD -B SRC:DST IMAGE CMD` as `ch-run --set-env -b SRC:DST IMAGE -- CMD`. A SquashFS image is
        read-only, so a bind's destination must exist in the image (every image has /mnt/0-9)."""
        ch_run = shlex.quote(self.ch_run)
        options = " ".join(shlex.quote(option) for option in self.settings.exec_options)
        return ("#!/bin/bash\n# containers-ci: SCMD for Charliecloud (generated): singularity exec's grammar run "
                "by ch-run\n" + LAUNCHER_OPTIONS +
                'args=(); for ((i = 0; i < ${#binds[@]}; i += 2)); do args+=(-b "${binds[i]}:${binds[i+1]}"); done\n'
                f'exec {ch_run} --set-env {options} "${{args[@]}}" "$image" -- "$@"\n')
