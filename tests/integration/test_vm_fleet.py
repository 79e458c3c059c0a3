"""`inv vm.start --count 2` and friends against the emulated cloud (real openstacksdk HTTP), with the
VMs' SSH answered by the loopback sshd (the emulator gives every server the floating IP 127.0.0.1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.config.settings import SSHSettings
from tests.cloud_emulator import Cloud, Emulator
from tests.cloud_emulator.testing import PROJECT_DIR

pytestmark = pytest.mark.ssh


@pytest.fixture(autouse=True)
def _no_openstack_environment(no_openstack_environment: None) -> None:
    """The tasks see only the configuration the test writes."""


def inv(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("OS_", "INVOKE_"))}
    env["PYTHONPATH"] = str(PROJECT_DIR)
    return subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), *args], cwd=PROJECT_DIR, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def fleet_config(emulator: Emulator, tmp_path: Path, ssh: SSHSettings) -> Path:
    clouds = emulator.write_clouds_yaml(tmp_path / "secrets" / "clouds.yaml")
    config: dict[str, Any] = {"ci": {"state_dir": str(tmp_path / "state"), "vm": {
        "cloud": "emulated", "clouds_file": str(clouds), "image": "Ubuntu-22.04", "flavor": "standard.small",
        "ssh_key": ssh.key_filename, "ssh_user": ssh.user, "ssh_port": ssh.port, "poll_interval": 0.05,
        "volume_size": 1, "timeouts": {"active": 10, "ssh": 30, "volume": 10, "delete": 10, "prepare": 60}}}}
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def test_vm_tasks_with_count_two_start_find_show_and_tear_down_two_vms(loopback_ssh: SSHSettings,
                                                                       tmp_path: Path) -> None:
    cloud = Cloud(floating_ip_address="127.0.0.1", build_seconds=0.1, delete_seconds=0.1, volume_seconds=0.05)
    with Emulator(cloud) as emulator:
        config = fleet_config(emulator, tmp_path, loopback_ssh)
        started = inv(config, "vm.start", "--count", "2")
        assert started.returncode == 0, started.stderr
        names = sorted(server["name"] for server in emulator.servers())
        assert names == ["containers-ci-build-1", "containers-ci-build-2"]
        assert sorted(volume["name"] for volume in emulator.volumes()) == ["containers-ci-docker-1",
                                                                           "containers-ci-docker-2"]
        assert len(emulator.floating_ips()) == 2
        for name in names:
            assert f"server {name}: ACTIVE" in started.stdout
            assert (tmp_path / "state" / "vm" / name / "known_hosts").read_text().strip()  # SSH answered each

        created = len([r for r in emulator.calls("POST", "/servers$") if r.status == 202])
        again = inv(config, "vm.start", "--count", "2")  # find-or-create: both are found
        assert again.returncode == 0, again.stderr
        assert len([r for r in emulator.calls("POST", "/servers$") if r.status == 202]) == created == 2

        status = inv(config, "vm.status", "--count", "2", "--json")
        assert status.returncode == 0, status.stderr
        assert [item["status"] for item in json.loads(status.stdout)] == ["ACTIVE", "ACTIVE"]
        listed = inv(config, "vm.names", "--count", "2")
        assert listed.stdout.split() == names

        down = inv(config, "vm.teardown", "--count", "2")
        assert down.returncode == 0, down.stderr
        assert emulator.servers() == [] and emulator.floating_ips() == []
        assert len(emulator.volumes()) == 2  # kept: each VM's Docker cache

        bad = inv(config, "vm.start", "--count", "--oops")
        assert bad.returncode != 0 and "Traceback" not in bad.stderr
