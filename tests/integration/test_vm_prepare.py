"""prepare-vm for real, over SSH to sshd on 127.0.0.1 (this machine plays the build VM).

The volume is a file-backed loop device; Docker is a private dockerd whose data directory is the
test's stand-in for /var/lib/docker, stopped and started by prepare-vm through
`--docker-service command:...`. This machine's own Docker engine, /etc/fstab and /var/lib/docker
are never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.settings import SSHSettings, vm_config
from ci.errors import CloudError
from ci.hosts import SSHHost
from ci.openstack import vm
from ci.openstack.cloud import VMInfo
from tests.cloud_emulator.testing import loop_device
from tests.support.services import require

pytestmark = [pytest.mark.ssh, pytest.mark.docker]

# The private dockerd gets its own bridge: with `--bridge none` dockerd deletes the interface docker0,
# which would break the machine's own engine.
DOCKERCTL = """#!/bin/sh
# Stop/start a private dockerd for the test (pid file, socket and exec root under {root}).
case "$1" in
stop)
    if [ -f {root}/dockerd.pid ]; then
        kill "$(cat {root}/dockerd.pid)" 2>/dev/null || true
        i=0
        while [ -f {root}/dockerd.pid ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i + 1)); done
    fi ;;
start)
    ip link show {bridge} >/dev/null 2>&1 || ip link add {bridge} type bridge
    ip link set {bridge} up
    setsid dockerd --data-root {docker_dir} --exec-root {root}/exec --pidfile {root}/dockerd.pid \\
        -H unix://{root}/docker.sock --bridge {bridge} --iptables=false --ip-masq=false \\
        --containerd-namespace ci-prepare-test --containerd-plugins-namespace ci-prepare-test-plugins \\
        >> {root}/dockerd.log 2>&1 < /dev/null & ;;
esac
"""


class Bed:
    def __init__(self, root: Path, device: str):
        self.root = root
        self.device = device
        self.docker_dir = root / "var-lib-docker"
        self.mount_point = root / "mnt"
        self.fstab = root / "fstab"
        self.socket = root / "docker.sock"
        self.ctl = root / "dockerctl"
        self.bridge = f"cibr{os.getpid() % 100000}"
        self.ctl.write_text(DOCKERCTL.format(root=root, docker_dir=self.docker_dir, bridge=self.bridge))
        self.ctl.chmod(0o755)
        self.fstab.write_text("# test fstab\n")

    def args(self) -> list[str]:
        return ["--docker-dir", str(self.docker_dir), "--fstab", str(self.fstab),
                "--docker-service", f"command:{self.ctl} stop;{self.ctl} start",
                "--docker-host", f"unix://{self.socket}", "--device-timeout", "2", "--timeout", "60"]

    def config(self, **keys: object) -> object:
        return vm_config({"ssh_user": "root", "mount_point": str(self.mount_point), "prepare_args": self.args(),
                          **keys}, self.root, env={})

    def docker(self, *args: str) -> str:
        return subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()


@pytest.fixture
def bed(tmp_path: Path, docker_available: None) -> Iterator[Bed]:
    require(shutil.which("dockerd") is not None and shutil.which("losetup") is not None and os.geteuid() == 0,
            "root with dockerd and losetup (to emulate the VM's volume and Docker)")
    root = Path(f"/tmp/ci-prepare-{os.getpid()}-{time.monotonic_ns() % 10**6}")  # short: unix socket paths
    root.mkdir()
    had_docker0 = _link_exists("docker0")
    try:
        with loop_device(tmp_path) as device:
            test_bed = Bed(root, device)
            try:
                yield test_bed
            finally:
                subprocess.run([str(test_bed.ctl), "stop"], check=False, timeout=60)
                subprocess.run(["ip", "link", "del", test_bed.bridge], capture_output=True, check=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert _link_exists("docker0") == had_docker0, "the machine's docker0 bridge was touched"


def _link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode == 0


def run_prepare(bed: Bed, host: SSHHost, **keys: object) -> list[str]:
    config = bed.config(**keys)
    info = VMInfo(name="loopback", volume_id="0f2a9d3e-5c1b-4e8a-9d7c-1234567890ab", volume_device=bed.device)
    return vm.prepare_host(config, host, info)  # type: ignore[arg-type]


def test_prepare_vm_mounts_the_volume_moves_docker_onto_it_and_is_idempotent(bed: Bed, ssh_host: SSHHost) -> None:
    bed.docker_dir.mkdir()
    (bed.docker_dir / "from-the-image").write_text("the VM's own Docker data\n")
    first = "\n".join(run_prepare(bed, ssh_host))
    for phrase in ("formatting", "mounting", f"adding {bed.mount_point} to {bed.fstab}", "pointing",
                   "moving the VM's Docker data", "restarting Docker", "ready: Docker"):
        assert phrase in first, f"first run lacks {phrase!r}:\n{first}"
    target = bed.mount_point / "docker"
    assert bed.docker_dir.is_symlink() and bed.docker_dir.resolve() == target
    assert (target / "from-the-image").read_text() == "the VM's own Docker data\n"
    assert bed.docker("info", "--format", "{{.DockerRootDir}}") == str(target)
    source = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(bed.mount_point)], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert source == bed.device
    assert bed.fstab.read_text().count(str(bed.mount_point)) == 1
    pid = (bed.root / "dockerd.pid").read_text()

    second = "\n".join(run_prepare(bed, ssh_host))
    assert "already points to" in second and "keeping it" in second and "ready: Docker" in second
    assert "formatting" not in second and "restarting" not in second and "pointing" not in second
    assert (bed.root / "dockerd.pid").read_text() == pid  # Docker was not restarted
    assert bed.fstab.read_text().count(str(bed.mount_point)) == 1


def test_a_volume_with_docker_data_keeps_it_and_the_vm_s_own_is_moved_aside(bed: Bed, ssh_host: SSHHost) -> None:
    run_prepare(bed, ssh_host)
    (bed.mount_point / "docker" / "layer-cache").write_text("from the last VM\n")
    subprocess.run([str(bed.ctl), "stop"], check=True)
    subprocess.run(["umount", str(bed.mount_point)], check=True)  # a new VM: volume not mounted yet,
    bed.docker_dir.unlink()                                       # and a fresh /var/lib/docker
    bed.docker_dir.mkdir()
    (bed.docker_dir / "fresh").write_text("new VM\n")
    output = "\n".join(run_prepare(bed, ssh_host))
    assert "already holds Docker data: keeping it" in output
    assert (bed.mount_point / "docker" / "layer-cache").read_text() == "from the last VM\n"
    [aside] = list(bed.root.glob("var-lib-docker.before-containers-ci.*"))
    assert (aside / "fresh").exists()
    assert bed.docker("info", "--format", "{{.DockerRootDir}}") == str(bed.mount_point / "docker")


def test_a_device_that_never_appears_is_a_clear_failure(bed: Bed, ssh_host: SSHHost) -> None:
    with pytest.raises(CloudError) as caught:
        run_prepare(bed, ssh_host, device="/dev/containers-ci-no-such-disk")
    message = str(caught.value)
    assert "no block device for the volume" in message and "--device" in message
    assert "run it by hand: ssh -i" in message and "prepare-vm" in message


def test_a_device_mounted_elsewhere_is_refused(bed: Bed, ssh_host: SSHHost, tmp_path: Path) -> None:
    subprocess.run(["mkfs.ext4", "-q", bed.device], check=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    subprocess.run(["mount", bed.device, str(elsewhere)], check=True)
    try:
        with pytest.raises(CloudError, match=r"already mounted at .*elsewhere, not .*is this the right device"):
            run_prepare(bed, ssh_host)
    finally:
        subprocess.run(["umount", str(elsewhere)], check=False)
    assert not bed.docker_dir.exists()


def test_inv_vm_prepare_runs_the_same_over_the_task_path(bed: Bed, loopback_ssh: SSHSettings,
                                                         tmp_path: Path) -> None:
    """vm.prepare with --address: copies the script, runs it, then checks Docker over SSH from here."""
    from ci.config.settings import deep_merge, load_settings
    from tests.support.config import project_config
    from tests.support.paths import PROJECT_DIR

    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"), "vm": {
        "ssh_user": "root", "ssh_port": loopback_ssh.port, "ssh_key": loopback_ssh.key_filename,
        "mount_point": str(bed.mount_point), "device": bed.device, "prepare_args": bed.args(), "poll_interval": 0.2}})
    settings = load_settings(raw, PROJECT_DIR, profile="local")
    lines = vm.prepare(settings, address="127.0.0.1")
    assert any("ready: Docker" in line for line in lines)
    assert lines[-1].startswith("Docker ") and "answers over SSH: DOCKER_HOST=ssh://root@127.0.0.1:2222" in lines[-1]
