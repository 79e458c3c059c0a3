"""The build VM's pieces that need no cloud: prepare-vm's command line, the SSH files for the docker
CLI, readiness probes, the tasks' help, and the OpenStack helper image's staging and digest."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.settings import Settings, deep_merge, load_settings, vm_config
from ci.errors import CloudError
from ci.openstack import helper_image as openstack_image
from ci.openstack import vm
from ci.openstack.cloud import VMInfo
from tests.support.config import project_config
from tests.support.paths import PROJECT_DIR


def settings_with(tmp_path: Path, **vm_keys: object) -> Settings:
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"), "vm": {"image": "x", **vm_keys}})
    return load_settings(raw, PROJECT_DIR, profile="local")


# ---- prepare-vm's command line -------------------------------------------------------------------

def test_prepare_command_passes_the_volume_and_uses_sudo_for_a_normal_user(tmp_path: Path) -> None:
    config = vm_config({"prepare_args": ["--fstab", "none"]}, tmp_path, env={})
    info = VMInfo(name="x", volume_id="1234", volume_device="/dev/vdb")
    command = vm.prepare_command(config, info)
    assert command[:4] == ["sudo", "-n", "sh", ".containers-ci/prepare-vm"]
    assert command[command.index("--volume-id") + 1] == "1234"
    assert command[command.index("--device") + 1] == "/dev/vdb"
    assert command[command.index("--docker-user") + 1] == "ubuntu"
    assert command[-2:] == ["--fstab", "none"]


def test_prepare_command_prefers_the_configured_device_and_skips_sudo_for_root(tmp_path: Path) -> None:
    config = vm_config({"ssh_user": "root", "device": "/dev/vdc"}, tmp_path, env={})
    command = vm.prepare_command(config, VMInfo(name="x", volume_device="/dev/vdb"))
    assert command[0] == "sh" and command[command.index("--device") + 1] == "/dev/vdc"
    assert vm.prepare_command(config, VMInfo(name="x"), "/dev/loop7")[-1] == "/dev/loop7"


def test_prepare_vm_is_posix_sh_and_explains_itself() -> None:
    script = vm.PREPARE_SCRIPT
    assert script.read_text().startswith("#!/bin/sh\n")
    assert subprocess.run(["sh", "-n", str(script)], check=False).returncode == 0
    if Path("/bin/dash").exists():
        assert subprocess.run(["/bin/dash", "-n", str(script)], check=False).returncode == 0
    usage = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True, check=True).stdout
    for option in ("--volume-id", "--device", "--mount-point", "--docker-dir", "--docker-service", "--fstab"):
        assert option in usage
    wrong = subprocess.run(["sh", str(script), "--colour", "blue"], capture_output=True, text=True, check=False)
    assert wrong.returncode == 1 and "unknown argument '--colour'" in wrong.stderr


# ---- the docker CLI's SSH setup --------------------------------------------------------------------

def test_remote_docker_writes_a_private_ssh_config_and_wrappers(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI_SSH_KEY_PASSPHRASE", raising=False)
    settings = settings_with(tmp_path, ssh_user="root", ssh_port=2222, ssh_key=str(tmp_path / "key"))
    config = vm.config_from(settings)
    remote = vm.RemoteDocker(settings, config, "127.0.0.1")
    assert remote.url == "ssh://root@127.0.0.1:2222"
    text = remote.ssh_config.read_text()
    assert f"IdentityFile {tmp_path / 'key'}" in text and "BatchMode yes" in text
    assert f"UserKnownHostsFile {remote.known_hosts}" in text and "StrictHostKeyChecking accept-new" in text
    for wrapper in ("ssh", "docker"):
        path = remote.bin / wrapper
        assert path.stat().st_mode & stat.S_IXUSR
        assert subprocess.run(["sh", "-n", str(path)], check=False).returncode == 0
    assert f"-F {remote.ssh_config}" in (remote.bin / "ssh").read_text()
    assert "SSH_AUTH_SOCK" not in (remote.bin / "ssh").read_text()
    applied = remote.apply(settings)
    assert applied.docker_host == remote.url and applied.docker_client == remote.client
    assert stat.S_IMODE(remote.folder.stat().st_mode) == 0o700
    remote.close()


def test_a_passphrase_routes_ssh_through_a_private_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_SSH_KEY_PASSPHRASE", "x")
    settings = settings_with(tmp_path, ssh_key=str(tmp_path / "key"))
    remote = vm.RemoteDocker(settings, vm.config_from(settings), "192.0.2.1")
    assert f"SSH_AUTH_SOCK={remote.folder / 'agent.sock'}" in (remote.bin / "ssh").read_text()


def test_docker_host_url_leaves_out_the_default_port(tmp_path: Path) -> None:
    assert vm.docker_host_url(vm_config({}, tmp_path, env={}), "192.0.2.7") == "ssh://ubuntu@192.0.2.7"


# ---- readiness probes ------------------------------------------------------------------------------

@pytest.fixture
def banner_server() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = int(server.getsockname()[1])

    def serve() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"SSH-2.0-OpenSSH_9.2 fake\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    server.close()


def test_the_banner_probe_tells_ssh_from_silence(banner_server: int) -> None:
    assert vm.ssh_banner("127.0.0.1", banner_server)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    assert not vm.ssh_banner("127.0.0.1", free, timeout=0.5)


def test_waiting_for_ssh_gives_up_at_the_deadline_with_the_likely_causes(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free = int(sock.getsockname()[1])
    config = vm_config({"ssh_port": free, "poll_interval": 0.05, "timeouts": {"ssh": 0.3}}, tmp_path, env={})
    with pytest.raises(CloudError, match=r"no SSH server answered on 127.0.0.1:\d+ within 0s.*security group"):
        vm.wait_for_ssh(config, "127.0.0.1", known_hosts=tmp_path / "known_hosts")


def test_a_server_that_greets_but_refuses_our_key_times_out_naming_the_user(tmp_path: Path,
                                                                            banner_server: int) -> None:
    config = vm_config({"ssh_port": banner_server, "poll_interval": 0.05, "timeouts": {"ssh": 0.5},
                        "ssh_key": str(tmp_path / "missing")}, tmp_path, env={})
    with pytest.raises(CloudError, match=r"does not accept ubuntu with key .*ci.vm.ssh_user"):
        vm.wait_for_ssh(config, "127.0.0.1", known_hosts=tmp_path / "known_hosts")


# ---- the tasks read like a manual ------------------------------------------------------------------

def _inv(*args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    result = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=PROJECT_DIR, env=env,
                            capture_output=True, text=True, check=True, timeout=60)
    return result.stdout


def test_inv_list_shows_the_vm_steps_and_the_helper_image() -> None:
    listing = _inv("--list")
    for name in ("vm.start", "vm.prepare", "vm.status", "vm.teardown", "openstack.image"):
        assert name in listing


@pytest.mark.parametrize(("task", "phrases"), [
    ("vm.start", ["Idempotent", "ACTIVE", "OS_MY_IMAGE", "--flavor", "openstack server show", "vm.prepare"]),
    ("vm.prepare", ["prepare-vm --help", "/var/lib/docker", "--address", "--device", "DOCKER_HOST=ssh://"]),
    ("vm.teardown", ["floating IP", "keep the volume", "SIGTERM", "Idempotent"]),
])
def test_each_vm_task_explains_how_to_debug_its_step(task: str, phrases: list[str]) -> None:
    text = " ".join(_inv(task, "--help").split())
    for phrase in phrases:
        assert phrase in text, f"{task} --help lacks {phrase!r}"


# ---- the OpenStack helper image: staging and digest -------------------------------------------------

def test_the_helper_context_holds_the_package_and_its_digest_follows_the_inputs(tmp_path: Path) -> None:
    certificate = tmp_path / "proxy.crt"
    certificate.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    first = tmp_path / "a"
    openstack_image.stage_context(PROJECT_DIR, first, (certificate,))
    for relative in ("Dockerfile", "src/pyproject.toml", "src/ci/openstack/cloud.py", "src/ci/openstack/prepare-vm",
                     "src/tasks.py", "certs/00-proxy.crt"):
        assert (first / relative).is_file(), relative
    assert not list(first.rglob("__pycache__"))
    digest = openstack_image.helper_digest(first, {"BASE_IMAGE": "b"})
    second = tmp_path / "b"
    openstack_image.stage_context(PROJECT_DIR, second, (certificate,))
    assert openstack_image.helper_digest(second, {"BASE_IMAGE": "b"}) == digest
    assert openstack_image.helper_digest(second, {"BASE_IMAGE": "c"}) != digest
    certificate.write_text("another\n")
    third = tmp_path / "c"
    openstack_image.stage_context(PROJECT_DIR, third, (certificate,))
    assert openstack_image.helper_digest(third, {"BASE_IMAGE": "b"}) != digest


def test_the_helper_repository_gets_the_registry_prefix_unless_it_names_a_registry(tmp_path: Path) -> None:
    raw = deep_merge(project_config(), {"registry_prefix": "registry.example.org/ci/"})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    assert openstack_image.helper_settings(settings).repository == "registry.example.org/ci/containers-ci/openstack"
    raw = deep_merge(raw, {"openstack_image": {"repository": "localhost:5000/tools/openstack"}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    assert openstack_image.helper_settings(settings).repository == "localhost:5000/tools/openstack"
