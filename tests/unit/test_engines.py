"""The engines' commands, exactly as they would run, and the conversion protocol on a fake host.

Apptainer and SingularityCE cannot be installed here, so these commands are the whole test of
those engines: they are checked against the documented command lines (build --fix-perms,
--mksquashfs-args, docker:// / docker-daemon:// / docker-archive://, exec --bind, the NOHTTPS and
DOCKER_USERNAME/PASSWORD variables).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from ci.engines import (
    ApptainerEngine,
    Bind,
    CharliecloudEngine,
    Compression,
    DockerSiteEngine,
    EngineSettings,
    ImageSource,
    RegistryCredentials,
    SingularityEngine,
    installed_engines,
    make_engine,
    select_engine,
)
from ci.engines.base import SECRET_PROLOGUE, with_secret_env
from ci.engines.flatten import FlattenError, flatten
from ci.errors import EngineError
from ci.hosts import CommandResult

DAEMON = ImageSource.daemon("base:12-abc")
REGISTRY = ImageSource.registry("127.0.0.1:5000/base:12-abc", insecure=True)
TLS_REGISTRY = ImageSource.registry("registry.example.org/project/base:12-abc")
ARCHIVE = ImageSource.archive("/site/staging/run/base/base.tar")
ZSTD = "-comp zstd -Xcompression-level 3"


class FakeHost:
    """Records every command; answers from `responder(argv)` (default: success, no output)."""

    name = "fake"

    def __init__(self, responder: Callable[[tuple[str, ...]], CommandResult | None] | None = None):
        self.commands: list[tuple[str, ...]] = []
        self.envs: list[Mapping[str, str]] = []
        self.stdins: list[str | None] = []
        self.files: dict[str, str] = {}
        self.responder = responder

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = tuple(command)
        self.commands.append(argv)
        self.envs.append(dict(env or {}))
        self.stdins.append(stdin)
        answer = self.responder(argv) if self.responder else None
        return answer or CommandResult(argv, 0, "", "")

    def write_text(self, remote: str, text: str, mode: int | None = None) -> None:
        self.files[remote] = text

    def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError

    def read_text(self, remote: str) -> str:
        return self.files[remote]

    def exists(self, remote: str) -> bool:
        return remote in self.files

    def close(self) -> None:
        return None


# -- compression ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("zstd", ["-comp", "zstd", "-Xcompression-level", "3"]),
    ("zstd:9", ["-comp", "zstd", "-Xcompression-level", "9"]),
    ("gzip", ["-comp", "gzip"]),
    ("gzip:6", ["-comp", "gzip", "-Xcompression-level", "6"]),
    ("LZ4", ["-comp", "lz4"]),
])
def test_compression_parses_config_words(text: str, expected: list[str]) -> None:
    compression = Compression.parse(text)
    assert compression is not None
    assert compression.mksquashfs_args() == expected


@pytest.mark.parametrize("text", [None, "", "default", "none"])
def test_compression_default_keeps_the_engines_own(text: str | None) -> None:
    assert Compression.parse(text) is None


@pytest.mark.parametrize(("text", "message"), [
    ("brotli", "unknown SquashFS compressor"), ("zstd:30", "out of range"), ("lz4:3", "no level"),
    ("zstd:x", "whole number"),
])
def test_compression_rejects_with_the_fix(text: str, message: str) -> None:
    with pytest.raises(EngineError, match=message):
        Compression.parse(text)


# -- apptainer and singularity -------------------------------------------------------------------

def test_apptainer_builds_sif_from_each_source() -> None:
    engine = ApptainerEngine()
    assert engine.conversion_command(REGISTRY, "/s/base.sif") == [
        "apptainer", "build", "--fix-perms", "--mksquashfs-args", ZSTD, "/s/base.sif",
        "docker://127.0.0.1:5000/base:12-abc"]
    assert engine.conversion_command(DAEMON, "/s/b.sif")[-1] == "docker-daemon://base:12-abc"
    assert engine.conversion_command(ImageSource.daemon("base"), "/s/b.sif")[-1] == "docker-daemon://base:latest"
    assert engine.conversion_command(ARCHIVE, "/s/b.sif")[-1] == "docker-archive:///site/staging/run/base/base.tar"
    assert engine.file_suffix == "sif"


def test_apptainer_without_compression_uses_its_default() -> None:
    engine = make_engine("apptainer", compression="default")
    assert engine.conversion_command(TLS_REGISTRY, "/s/b.sif") == [
        "apptainer", "build", "--fix-perms", "/s/b.sif", "docker://registry.example.org/project/base:12-abc"]


def test_apptainer_plain_http_registry_through_its_variable() -> None:
    engine = ApptainerEngine(EngineSettings(tmp_dir="/scratch/tmp"))
    assert engine.conversion_env(REGISTRY) == {"APPTAINER_NOHTTPS": "true", "APPTAINER_TMPDIR": "/scratch/tmp"}
    assert engine.conversion_env(TLS_REGISTRY) == {"APPTAINER_TMPDIR": "/scratch/tmp"}


def test_apptainer_exec_binds() -> None:
    engine = ApptainerEngine(EngineSettings(exec_options=("--rocm",)))
    command = engine.exec_command("/s/b.sif", ["sh", "/t/run.sh"],
                                  [Bind("/site/tests", "/site/tests"), Bind("/data", "/data", read_only=True)])
    assert command == ["apptainer", "exec", "--rocm", "--bind", "/site/tests:/site/tests", "--bind", "/data:/data:ro",
                       "/s/b.sif", "sh", "/t/run.sh"]
    assert engine.guest_path(0, "/site/tests") == "/site/tests"


def test_singularity_is_apptainer_with_its_own_names() -> None:
    engine = SingularityEngine(EngineSettings(binary="/opt/singularity/bin/singularity"))
    assert engine.conversion_command(REGISTRY, "/s/b.sif")[:3] == ["/opt/singularity/bin/singularity", "build",
                                                                    "--fix-perms"]
    assert engine.conversion_env(REGISTRY) == {"SINGULARITY_NOHTTPS": "true"}
    secrets = engine.secret_env(RegistryCredentials("robot", "s3cret"))
    assert secrets == {"SINGULARITY_DOCKER_USERNAME": "robot", "SINGULARITY_DOCKER_PASSWORD": "s3cret"}
    assert engine.exec_command("/s/b.sif", ["true"])[:2] == ["/opt/singularity/bin/singularity", "exec"]


def test_credentials_reach_the_engine_on_stdin_never_argv() -> None:
    host = FakeHost()
    ApptainerEngine().convert(host, TLS_REGISTRY, "/s/b.sif", credentials=RegistryCredentials("robot", "s3cret"))
    build = next(c for c in host.commands if "build" in c)
    stdin = host.stdins[host.commands.index(build)]
    assert "s3cret" not in " ".join(build)
    assert all("s3cret" not in value for env in host.envs for value in env.values())
    assert build[:4] == ("sh", "-c", SECRET_PROLOGUE, "sh")
    assert stdin == "APPTAINER_DOCKER_USERNAME=robot\nAPPTAINER_DOCKER_PASSWORD=s3cret\n"
    assert "s3cret" not in repr(RegistryCredentials("robot", "s3cret"))


def test_secret_prologue_exports_values_with_spaces() -> None:
    argv, stdin = with_secret_env(["sh", "-c", 'printf "%s|%s" "$A" "$B"'], {"A": "x y", "B": "p=q;$z"})
    assert subprocess.run(argv, input=stdin, capture_output=True, text=True, check=True).stdout == "x y|p=q;$z"
    with pytest.raises(EngineError, match="line break"):
        with_secret_env(["true"], {"A": "two\nlines"})
    with pytest.raises(EngineError, match="not a valid"):
        with_secret_env(["true"], {"A-B": "x"})


# -- charliecloud --------------------------------------------------------------------------------

def test_charliecloud_default_compression_is_plain_ch_convert() -> None:
    engine = make_engine("charliecloud", compression=None)
    command = engine.conversion_command(DAEMON, "/s/b.sqfs.part")
    assert command[:4] == ["sh", "-c", 'PATH=/usr/bin:"$PATH"; export PATH; exec "$@"', "sh"]
    assert command[4:] == ["ch-convert", "--tmp", "/s", "-i", "docker", "-o", "squash", "base:12-abc", "/s/b.sqfs.part"]


def test_charliecloud_with_a_compressor_exports_a_folder_and_packs_it_itself() -> None:
    engine = CharliecloudEngine()
    command = engine.conversion_command(DAEMON, "/s/b.sqfs.part")
    assert command[:2] == ["sh", "-euc"]
    script = command[2]
    assert 'docker save -o "$dir.tar" "$src"; python3 "$out.flatten.py" "$dir.tar" "$dir"; rm -f "$dir.tar"' in script
    assert (f'mksquashfs "$dir" "$out" -b 65536 -noappend -all-root -no-progress {ZSTD}') in script
    assert script.startswith('PATH=/usr/bin:"$PATH"; ')
    assert command[3:] == ["ch-convert", "/s", "base:12-abc", "/s/b.sqfs.part.d", "/s/b.sqfs.part"]


def test_charliecloud_path_prefix_can_be_switched_off() -> None:
    engine = CharliecloudEngine(EngineSettings(path_prefix="", compression=None))
    assert engine.conversion_command(DAEMON, "/s/b.sqfs")[0] == "ch-convert"


def test_charliecloud_archive_goes_through_the_flattener() -> None:
    engine = CharliecloudEngine()
    script = engine.conversion_command(ARCHIVE, "/s/b.sqfs.part")[2]
    assert 'python3 "$out.flatten.py" "$src" "$dir"' in script
    host = FakeHost()
    engine.convert(host, ARCHIVE, "/s/b.sqfs")
    assert "/s/b.sqfs.part.flatten.py" in host.files
    assert "def flatten(" in host.files["/s/b.sqfs.part.flatten.py"]


def test_charliecloud_registry_pulls_with_ch_image_or_docker_for_plain_http() -> None:
    engine = CharliecloudEngine()
    script = engine.conversion_command(TLS_REGISTRY, "/s/b.sqfs")[2]
    assert 'ch-image pull "$src"; ch-convert --tmp "$tmp" -i ch-image -o dir "$src" "$dir"' in script
    assert engine.secret_env(RegistryCredentials("u", "p")) == {
        "CH_IMAGE_AUTH": "yes", "CH_IMAGE_USERNAME": "u", "CH_IMAGE_PASSWORD": "p"}
    plain = engine.conversion_command(REGISTRY, "/s/b.sqfs")[2]
    assert 'docker pull -q "$src" >/dev/null; docker save -o "$dir.tar" "$src"; python3 "$out.flatten.py"' in plain
    assert "ch-image pull" not in plain and "plain-http registry" in plain  # the message without docker either


def test_charliecloud_runs_with_the_image_environment_and_mnt_binds() -> None:
    engine = CharliecloudEngine()
    assert engine.guest_path(0, "/site/tests") == "/mnt/0"
    assert engine.exec_command("/s/b.sqfs", ["sh", "/mnt/0/t.sh"], [Bind("/site/tests", "/mnt/0")]) == [
        "ch-run", "--set-env", "-b", "/site/tests:/mnt/0", "/s/b.sqfs", "--", "sh", "/mnt/0/t.sh"]
    with pytest.raises(EngineError, match="mount points"):
        engine.guest_path(10, "/x")


# -- docker --------------------------------------------------------------------------------------

def test_docker_engine_image_file_is_an_archive() -> None:
    engine = DockerSiteEngine(EngineSettings(docker="/usr/bin/docker"))
    assert engine.file_suffix == "tar"
    assert engine.conversion_command(DAEMON, "/s/b.tar") == ["/usr/bin/docker", "save", "-o", "/s/b.tar",
                                                             "base:12-abc"]
    assert engine.conversion_command(ARCHIVE, "/s/b.tar") == ["cp", ARCHIVE.location, "/s/b.tar"]
    pull = engine.conversion_command(REGISTRY, "/s/b.tar")
    assert pull[3:] == ["docker-pull", "127.0.0.1:5000/base:12-abc", "/s/b.tar", "127.0.0.1:5000"]
    assert "--password-stdin" in pull[2] and "$CI_REGISTRY_PASSWORD" in pull[2]


def test_docker_engine_runs_the_archive_it_loads() -> None:
    command = DockerSiteEngine().exec_command("/s/b.tar", ["sh", "-c", "echo $CI_TEST"], [Bind("/t", "/t", True)],
                                          pass_env=["CI_TEST"])
    assert command[0:2] == ["sh", "-c"] and command[3:] == ["docker-run", "/s/b.tar"]
    script = command[2]
    assert 'docker load -q -i "$1"' in script
    assert "exec docker run --rm -v /t:/t:ro -e CI_TEST \"$ref\" sh -c 'echo $CI_TEST'" in script


def test_registry_host_of_a_reference() -> None:
    assert REGISTRY.registry_host == "127.0.0.1:5000"
    assert TLS_REGISTRY.registry_host == "registry.example.org"
    assert ImageSource.registry("library/debian:12").registry_host == "docker.io"


# -- conversion protocol -------------------------------------------------------------------------

def test_convert_writes_a_part_file_then_renames_it() -> None:
    host = FakeHost(lambda argv: CommandResult(argv, 0, "12345\n", "") if argv[0] == "stat" else None)
    result = ApptainerEngine().convert(host, REGISTRY, "/site/s/b.sif", env={"EXTRA": "1"})
    build_index = next(i for i, c in enumerate(host.commands) if "build" in c)
    assert host.commands[build_index][-2] == "/site/s/b.sif.part"
    assert host.commands[build_index][:4] == ("env", "APPTAINER_NOHTTPS=true", "EXTRA=1", "apptainer")
    assert result.command == host.commands[build_index]
    assert ("mv", "-f", "/site/s/b.sif.part", "/site/s/b.sif") in host.commands
    assert host.commands.index(("mv", "-f", "/site/s/b.sif.part", "/site/s/b.sif")) > build_index
    assert result.size == 12345 and result.output == "/site/s/b.sif"


def test_failed_conversion_leaves_nothing_and_names_the_fix() -> None:
    def responder(argv: tuple[str, ...]) -> CommandResult | None:
        if "build" in argv:
            return CommandResult(argv, 255, "", "FATAL: ... server gave HTTP response to HTTPS client")
        return None

    host = FakeHost(responder)
    with pytest.raises(EngineError, match=r"plain http.*plain_http"):
        ApptainerEngine().convert(host, TLS_REGISTRY, "/s/b.sif")
    assert ("rm", "-rf", "/s/b.sif.part") in host.commands
    assert not any(c[0] == "mv" for c in host.commands)


def test_missing_engine_binary_says_how_to_install() -> None:
    host = FakeHost(lambda argv: CommandResult(argv, 127, "", "sh: apptainer: not found") if "build" in argv else None)
    with pytest.raises(EngineError, match="load its module"):
        ApptainerEngine().convert(host, REGISTRY, "/s/b.sif")


# -- selection -----------------------------------------------------------------------------------

def _host_with(*binaries: str) -> FakeHost:
    return FakeHost(lambda argv: CommandResult(argv, 0, "\n".join(b for b in argv[4:] if b in binaries), "")
                    if argv[:2] == ("sh", "-c") else None)


def test_auto_prefers_apptainer_then_singularity_then_charliecloud_then_docker() -> None:
    assert select_engine("auto", _host_with("docker", "ch-convert", "ch-run", "mksquashfs", "apptainer")).name == \
        "apptainer"
    assert select_engine(None, _host_with("docker", "singularity")).name == "singularity"
    assert select_engine("auto", _host_with("docker", "ch-convert", "ch-run", "mksquashfs")).name == "charliecloud"
    assert select_engine("auto", _host_with("docker", "ch-convert")).name == "docker"
    assert installed_engines(_host_with("docker", "apptainer")) == ["apptainer", "docker"]


def test_select_engine_passes_the_compression_through() -> None:
    engine = select_engine("auto", _host_with("apptainer"), compression="lz4")
    assert "-comp lz4" in engine.conversion_command(REGISTRY, "/s/b.sif")


def test_selection_errors_name_the_fix() -> None:
    with pytest.raises(EngineError, match=r"no container engine.*inv local\.up"):
        select_engine("auto", _host_with())
    with pytest.raises(EngineError, match=r"apptainer is not installed.*installed: docker"):
        select_engine("apptainer", _host_with("docker"))
    with pytest.raises(EngineError, match="unknown engine 'podman'"):
        select_engine("podman", _host_with("docker"))


# -- flattening docker archives ------------------------------------------------------------------

def _layer(entries: list[tuple[str, str | None, str | None]]) -> bytes:
    """A layer tar from (name, file content | None for a folder, symlink target)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as layer:
        for name, content, link in entries:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                layer.addfile(info)
            elif content is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                layer.addfile(info)
            else:
                data = content.encode()
                info.size, info.mode = len(data), 0o644
                layer.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _archive(path: Path, layers: list[bytes], env: list[str]) -> Path:
    files = {"config.json": json.dumps({"config": {"Env": env}}).encode(),
             "manifest.json": json.dumps([{"Config": "config.json", "RepoTags": ["x:1"],
                                           "Layers": [f"l{i}/layer.tar" for i in range(len(layers))]}]).encode()}
    files.update({f"l{i}/layer.tar": data for i, data in enumerate(layers)})
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_flatten_applies_layers_and_whiteouts(tmp_path: Path) -> None:
    base = _layer([("etc", None, None), ("etc/keep", "k", None), ("etc/gone", "g", None), ("opt", None, None),
                   ("opt/old", "o", None), ("lib", None, "usr/lib"), ("usr", None, None), ("usr/lib", None, None)])
    top = _layer([("etc/.wh.gone", "", None), ("opt/.wh..wh..opq", "", None), ("opt/new", "n", None),
                  ("./etc/keep", "changed", None), ("usr/lib/libx.so", "x", None)])
    archive = _archive(tmp_path / "img.tar", [base, top], ["PATH=/usr/bin", "LANG=C.UTF-8"])
    root = tmp_path / "root"
    flatten(str(archive), str(root))
    assert (root / "etc/keep").read_text() == "changed"
    assert not (root / "etc/gone").exists()
    assert sorted(os.listdir(root / "opt")) == ["new"]
    assert os.readlink(root / "lib") == "usr/lib" and (root / "lib/libx.so").read_text() == "x"
    assert (root / "ch/environment").read_text() == "PATH=/usr/bin\nLANG=C.UTF-8\n"
    assert (root / "mnt/9").is_dir() and (root / "etc/resolv.conf").is_file()


def test_flatten_refuses_to_write_outside_the_image(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = _layer([("escape", None, str(outside)), ("escape/pwned", "x", None)])
    flatten(str(_archive(tmp_path / "a.tar", [evil], [])), str(tmp_path / "root"))
    assert not (outside / "pwned").exists()  # the absolute link resolves inside the image
    assert (tmp_path / "root" / str(outside).lstrip("/") / "pwned").exists()
    dotdot = _layer([("../escape", "x", None)])
    with pytest.raises(FlattenError, match=r"'\.\.'"):
        flatten(str(_archive(tmp_path / "b.tar", [dotdot], [])), str(tmp_path / "root2"))
    relative = _layer([("up", None, "../../.."), ("up/pwned", "x", None)])
    with pytest.raises(FlattenError, match="outside the image"):
        flatten(str(_archive(tmp_path / "c.tar", [relative], [])), str(tmp_path / "root3"))
