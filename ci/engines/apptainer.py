"""Apptainer: `apptainer build --fix-perms out.sif docker://...`, `apptainer exec --bind ... out.sif cmd`.

Apptainer is not in Debian 12 or on PyPI, so this engine is written against its documented
command line and tested for the commands it produces. Plain-http registries are selected with
the environment variable `APPTAINER_NOHTTPS`, which every release reads (the flag itself was
renamed from `--nohttps` to `--no-https`); credentials go in `APPTAINER_DOCKER_USERNAME` and
`APPTAINER_DOCKER_PASSWORD`, never on the command line.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from ci.engines.base import BaseEngine, Bind, ImageSource, RegistryCredentials, SourceKind


def _with_tag(reference: str) -> str:
    """docker-daemon:// needs an explicit tag or digest; Docker's own default is `latest`."""
    last = reference.rsplit("/", 1)[-1]
    return reference if (":" in last or "@" in reference) else f"{reference}:latest"


class ApptainerEngine(BaseEngine):
    """SIF images built from Docker/OCI sources with Apptainer (LUMI and most EuroHPC sites)."""

    name: ClassVar[str] = "apptainer"
    file_suffix: ClassVar[str] = "sif"
    binaries: ClassVar[tuple[str, ...]] = ("apptainer",)
    env_prefix: ClassVar[str] = "APPTAINER"
    install_hint: ClassVar[str] = ("apptainer is not on the site host's PATH: load its module, set "
                                   "ci.site.engine to one that is installed, or leave it on auto")

    @property
    def binary(self) -> str:
        return self.settings.binary or self.name

    @staticmethod
    def source_uri(source: ImageSource) -> str:
        if source.kind is SourceKind.DAEMON:
            return f"docker-daemon://{_with_tag(source.location)}"
        if source.kind is SourceKind.REGISTRY:
            return f"docker://{source.location}"
        return f"docker-archive://{source.location}"

    def conversion_command(self, source: ImageSource, output: str) -> list[str]:
        argv = [self.binary, "build", "--fix-perms"]
        if self.settings.compression is not None:
            argv += ["--mksquashfs-args", " ".join(self.settings.compression.mksquashfs_args())]
        argv += [*self.settings.build_options, output, self.source_uri(source)]
        return argv

    def conversion_env(self, source: ImageSource) -> dict[str, str]:
        env: dict[str, str] = {}
        if source.kind is SourceKind.REGISTRY and source.plain_http:
            env[f"{self.env_prefix}_NOHTTPS"] = "true"
        if self.settings.tmp_dir:
            env[f"{self.env_prefix}_TMPDIR"] = self.settings.tmp_dir
        return env

    def secret_env(self, credentials: RegistryCredentials) -> dict[str, str]:
        return {f"{self.env_prefix}_DOCKER_USERNAME": credentials.username,
                f"{self.env_prefix}_DOCKER_PASSWORD": credentials.password}

    def exec_command(self, image_file: str, argv: Sequence[str], binds: Sequence[Bind] = (), *,
                     pass_env: Sequence[str] = ()) -> list[str]:
        """The host environment passes through by default, so `pass_env` needs no flags."""
        command = [self.binary, "exec", *self.settings.exec_options]
        for bind in binds:
            command += ["--bind", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        return [*command, image_file, *argv]


    def launcher(self, binds: Sequence[Bind], helper: str) -> list[str]:
        """`singularity exec -B SRC:DST ...`: the engine speaks the grammar itself, no helper."""
        words = [self.binary, "exec", *self.settings.exec_options]
        for bind in binds:
            words += ["-B", f"{bind.source}:{bind.target}" + (":ro" if bind.read_only else "")]
        return words

    def launcher_helper(self) -> str | None:
        return None
