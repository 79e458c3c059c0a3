"""Remote builds for real: the docker CLI reaches "the VM's" engine over SSH (sshd on 127.0.0.1:2222
with the loopback key, so the VM's engine is this machine's), and the whole cpouta-style chain
start -> prepare -> build -> teardown runs against the emulated cloud with canary secrets.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci import api
from ci.config.settings import Settings, SSHSettings, deep_merge, load_settings
from ci.docker.engine import DockerEngine
from ci.docker.remote import RemoteDocker
from ci.openstack import vm
from tests.cloud_emulator import Cloud, Emulator
from tests.cloud_emulator.testing import Witness, assert_nowhere, loop_device, vm_settings
from tests.support.config import project_config
from tests.support.definitions import definition
from tests.support.paths import PROJECT_DIR
from tests.support.services import BASE_IMAGE, require

pytestmark = [pytest.mark.ssh, pytest.mark.docker]


@pytest.fixture
def base_image(docker_available: None) -> None:
    require(DockerEngine().image_exists(BASE_IMAGE), f"the base image {BASE_IMAGE} (`inv local.base-image`)")


@pytest.fixture(autouse=True)
def _no_openstack_environment(no_openstack_environment: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI_SSH_KEY_PASSPHRASE", raising=False)


def tiny_definitions(root: Path) -> str:
    """One definition with a unique label, so its digest is new and it really builds."""
    nonce = uuid.uuid4().hex[:12]
    definition(root, "overssh", dockerfile=f"FROM {BASE_IMAGE}\nLABEL test.nonce={nonce}\n"
                                           f"RUN echo built-over-ssh-{nonce} > /built.txt\n")
    return nonce


def remove_images(nonce: str) -> None:
    engine = DockerEngine()
    tags = [tag for image in engine.client.image.list(filters=[("label", f"test.nonce={nonce}")])
            for tag in image.repo_tags or []]
    engine.remove(tags)


def test_the_vm_engine_answers_over_ssh_with_our_key_and_known_hosts(loopback_ssh: SSHSettings, tmp_path: Path,
                                                                    docker_available: None) -> None:
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"), "vm": {
        "ssh_user": "root", "ssh_port": loopback_ssh.port, "ssh_key": loopback_ssh.key_filename}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    remote = RemoteDocker(settings, vm.config_from(settings), "127.0.0.1")
    try:
        assert remote.ping(timeout=30)
        assert "[127.0.0.1]:2222" in remote.known_hosts.read_text()  # the ssh client did connect
    finally:
        remote.close()


def test_a_build_runs_on_the_remote_engine(loopback_ssh: SSHSettings, tmp_path: Path, base_image: None) -> None:
    nonce = tiny_definitions(tmp_path / "defs")
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"), "definitions": str(tmp_path / "defs"),
                                        "vm": {"ssh_user": "root", "ssh_port": loopback_ssh.port,
                                               "ssh_key": loopback_ssh.key_filename}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    remote = RemoteDocker(settings, vm.config_from(settings), "127.0.0.1")
    try:
        report = api.build(remote.apply(settings))
        assert report.ok, report
        engine = DockerEngine(client_call=[remote.client], host=remote.url)
        [image] = [i for i in engine.known_images() if i.name == "overssh"]
        assert image.tags and DockerEngine().image_digest_label(image.tags[0]) == image.digest
    finally:
        remote.close()
        remove_images(nonce)


@pytest.fixture
def encrypted_loopback_key(loopback_ssh: SSHSettings, tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """The loopback key (which sshd accepts) re-encrypted with a canary passphrase, in-process."""
    from cryptography.hazmat.primitives import serialization

    assert loopback_ssh.key_filename is not None
    passphrase = f"canary-passphrase-{uuid.uuid4().hex}"
    plain = serialization.load_ssh_private_key(Path(loopback_ssh.key_filename).read_bytes(), password=None)
    key = tmp_path / "keys" / "build-vm-key"
    key.parent.mkdir()
    key.write_bytes(plain.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                        serialization.BestAvailableEncryption(passphrase.encode())))
    key.chmod(0o600)
    shutil.copy(f"{loopback_ssh.key_filename}.pub", f"{key}.pub")
    yield key, passphrase


def test_build_all_on_a_vm_profile_starts_prepares_builds_and_tears_down(
        loopback_ssh: SSHSettings, tmp_path: Path, base_image: None, monkeypatch: pytest.MonkeyPatch,
        encrypted_loopback_key: tuple[Path, str], capfd: pytest.CaptureFixture[str]) -> None:
    """The cpouta chain against the emulated cloud; this machine is the VM; secrets are canaries."""
    require(shutil.which("losetup") is not None and os.geteuid() == 0, "root with losetup (the VM's volume)")
    key, passphrase = encrypted_loopback_key
    secret = f"canary-secret-{uuid.uuid4().hex}"
    monkeypatch.setenv("CI_SSH_KEY_PASSPHRASE", passphrase)
    nonce = tiny_definitions(tmp_path / "defs")
    witness = Witness(monkeypatch)
    cloud = Cloud(floating_ip_address="127.0.0.1", application_credential_secret=secret, build_seconds=0.1,
                  delete_seconds=0.1, volume_seconds=0.05)
    said: list[str] = []
    try:
        with Emulator(cloud) as emulator, loop_device(tmp_path) as device:
            for name, value in emulator.environment().items():
                monkeypatch.setenv(name, value)
            settings: Settings = vm_settings(
                emulator, tmp_path, profile="cpouta", ssh_key=key, definitions=str(tmp_path / "defs"),
                vm={"cloud": None, "clouds_file": None, "ssh_user": "root", "ssh_port": loopback_ssh.port,
                    "device": device, "mount_point": str(tmp_path / "mnt"), "poll_interval": 0.1,
                    "prepare_args": ["--docker-dir", str(tmp_path / "var-lib-docker"), "--docker-service", "none",
                                     "--fstab", "none", "--device-timeout", "5"]})
            assert vm.config_from(settings).enabled
            with api.build_environment(settings, said.append) as run_settings:
                assert run_settings.docker_host == "ssh://root@127.0.0.1:2222"
                assert len(emulator.servers()) == 1
                report = api.build(run_settings)
            assert report.ok, report
            assert emulator.servers() == [] and emulator.floating_ips() == []
            [volume] = emulator.volumes()
            assert volume["status"] == "available"
            assert (tmp_path / "var-lib-docker").resolve() == tmp_path / "mnt" / "docker"
    finally:
        remove_images(nonce)
    assert any("prepare-vm: ready" in line for line in said) and any("server containers-ci-build: deleted" in line
                                                                        for line in said)
    out, err = capfd.readouterr()
    for canary in (secret, passphrase):
        assert_nowhere(canary, witness, {"stdout": out, "stderr": err, "messages": "\n".join(said)},
                       [tmp_path / "state"])
