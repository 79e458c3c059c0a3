"""Canaries: the application credential secret, OS_PASSWORD and the SSH key passphrase never show up
on a command line, in output, logs, run folders or state files, on any path through the VM steps.

Every process this test spawns is recorded (subprocess.Popen wrapped, in this test only), and a
thread snapshots /proc/*/cmdline of every process on the machine while the steps run.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.errors import CIError
from ci.openstack import vm
from tests.cloud_emulator import Cloud, Emulator
from tests.cloud_emulator.testing import Witness, assert_nowhere, vm_settings
from tests.support.paths import PROJECT_DIR


@pytest.fixture
def canary() -> str:
    return f"canary-{uuid.uuid4().hex}"


@pytest.fixture
def witness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Witness]:
    seen = Witness(monkeypatch)
    yield seen
    seen.stop()


@pytest.fixture(autouse=True)
def _debug_logging(caplog: pytest.LogCaptureFixture) -> None:
    """The most talkative logging openstacksdk and keystoneauth have: HTTP requests included."""
    caplog.set_level(logging.DEBUG)
    for name in ("openstack", "keystoneauth", "urllib3", "paramiko", "fabric", "invoke"):
        logging.getLogger(name).setLevel(logging.DEBUG)


def stub_ssh_side(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vm, "wait_for_ssh", lambda config, address, say=None, **kw: 0.0)
    monkeypatch.setattr(vm, "prepare", lambda settings, say=None, **kw: ["prepare-vm: ready"])


def _every_vm_path(settings: Any, emulator: Emulator, say: Callable[[str], None]) -> None:
    """start, status, describe, build_vm (success and a failure), teardown twice."""
    vm.start(settings, say)
    for line in vm.describe(settings, vm.status(settings)):
        say(line)
    with vm.build_vm(settings, say) as run_settings:
        say(f"building with {run_settings.docker_host}")
    emulator.faults["server_error"] = True
    with pytest.raises(CIError) as failure, vm.build_vm(settings, say):
        pass
    say(str(failure.value))
    emulator.faults.clear()
    for line in vm.teardown(settings, say) + vm.teardown(settings, say):
        say(line)


@pytest.mark.parametrize("auth", ["application_credential", "password"])
def test_the_openstack_secret_never_leaks_from_os_variables(auth: str, canary: str, witness: Witness,
                                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capfd: pytest.CaptureFixture[str],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    stub_ssh_side(monkeypatch)
    cloud = Cloud(floating_ip_address="127.0.0.1", application_credential_secret=canary, password=canary,
                  build_seconds=0.05, delete_seconds=0.05, volume_seconds=0.02)
    with Emulator(cloud) as emulator:
        for name, value in emulator.environment(auth=auth).items():
            monkeypatch.setenv(name, value)
        settings = vm_settings(emulator, tmp_path, vm={"cloud": None, "clouds_file": None})
        said: list[str] = []
        _every_vm_path(settings, emulator, said.append)
        monkeypatch.setenv("OS_PASSWORD" if auth == "password" else "OS_APPLICATION_CREDENTIAL_SECRET",
                           canary + "-stale")
        with pytest.raises(CIError) as refused:
            vm.status(settings)
        token_bodies = [r.body for r in emulator.calls("POST", "/auth/tokens$")]
        elsewhere = [r for r in emulator.requests if not r.path.endswith("/auth/tokens")
                     and (canary in r.body or canary in str(r.query) or canary in str(r.headers))]
    assert all(canary in body for body in token_bodies) and token_bodies  # it did reach Keystone
    assert elsewhere == []
    out, err = capfd.readouterr()
    assert_nowhere(canary, witness, {"stdout": out, "stderr": err, "logs": caplog.text,
                                     "messages": "\n".join(said), "error": str(refused.value)},
                   [tmp_path / "state"])


def test_the_secret_in_clouds_yaml_never_leaks_through_the_command_line_tasks(canary: str, witness: Witness,
                                                                              tmp_path: Path) -> None:
    cloud = Cloud(floating_ip_address="127.0.0.1", application_credential_secret=canary, build_seconds=0.05,
                  delete_seconds=0.05, volume_seconds=0.02)
    with Emulator(cloud) as emulator:
        vm_settings(emulator, tmp_path)  # writes secrets/clouds.yaml and the key
        config = tmp_path / "invoke.yaml"
        config.write_text(
            "ci:\n  state_dir: {state}\n  vm:\n    cloud: emulated\n    clouds_file: {clouds}\n"
            "    image: Ubuntu-22.04\n    ssh_key: {key}\n    ssh_port: 1\n    poll_interval: 0.05\n"
            "    timeouts: {{ssh: 0.3}}\n".format(state=tmp_path / "state", clouds=tmp_path / "secrets/clouds.yaml",
                                               key=tmp_path / "id_ed25519"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        outputs = {}
        for number, task in enumerate(("vm.start", "vm.status", "vm.teardown", "vm.teardown")):
            result = subprocess.run([sys.executable, "-m", "invoke", "-f", str(config), task], cwd=PROJECT_DIR,
                                    env=env, capture_output=True, text=True, timeout=120, check=False)
            outputs[f"{number} {task} stdout"] = result.stdout
            outputs[f"{number} {task} stderr"] = result.stderr
            outputs[f"{number} {task} rc"] = str(result.returncode)
        assert emulator.servers() == []
    assert outputs["0 vm.start rc"] == "2"
    assert "no SSH server answered on 127.0.0.1:1" in outputs["0 vm.start stderr"]
    assert "server containers-ci-build: ACTIVE" in outputs["1 vm.status stdout"]
    assert "server containers-ci-build: deleted" in outputs["2 vm.teardown stdout"]
    assert "server containers-ci-build: none" in outputs["3 vm.teardown stdout"]
    assert {outputs[f"{n} {t} rc"] for n, t in [(1, "vm.status"), (2, "vm.teardown"), (3, "vm.teardown")]} == {"0"}
    assert "Traceback" not in "".join(outputs.values())
    assert_nowhere(canary, witness, outputs, [tmp_path / "state"])


def test_the_key_passphrase_reaches_the_agent_without_a_command_line(canary: str, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch,
                                                                     capfd: pytest.CaptureFixture[str]) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "encrypted_key"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.BestAvailableEncryption(canary.encode())))
    key.chmod(0o600)
    monkeypatch.setenv("CI_SSH_KEY_PASSPHRASE", canary)
    seen = Witness(monkeypatch)
    with Emulator() as emulator:
        settings = vm_settings(emulator, tmp_path, vm={"ssh_key": str(key)})
    remote = vm.RemoteDocker(settings, vm.config_from(settings), "127.0.0.1")
    try:
        remote.apply(settings)
        agent = {**os.environ, "SSH_AUTH_SOCK": str(remote.folder / "agent.sock")}
        listed = subprocess.run(["ssh-add", "-l"], env=agent, capture_output=True, text=True, check=False)
        assert listed.returncode == 0 and "ED25519" in listed.stdout  # the agent holds the decrypted key
    finally:
        remote.close()
    assert not (remote.folder / "agent.sock").exists()
    out, err = capfd.readouterr()
    assert_nowhere(canary, seen, {"stdout": out, "stderr": err}, [tmp_path / "state"])
