"""build-all's VM lifecycle: a failure injected at every step, and the server is deleted each time.

The cloud is the emulator (real openstacksdk HTTP); the SSH-side steps (SSH readiness, prepare-vm)
are replaced here by functions that succeed or fail on demand, because this is the fast suite:
tests/integration/test_remote_build.py runs them for real against sshd on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ci import api
from ci.config.settings import Settings
from ci.errors import BuildError, CIError, CloudError
from ci.openstack import vm
from tests.cloud_emulator import Cloud, Emulator
from tests.cloud_emulator.testing import vm_settings


@pytest.fixture(autouse=True)
def _no_openstack_environment(no_openstack_environment: None) -> None:
    """Tests see only the configuration they write."""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    cloud = Cloud(floating_ip_address="127.0.0.1", build_seconds=0.1, delete_seconds=0.1, volume_seconds=0.05)
    with Emulator(cloud) as emu:
        yield emu


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def settings(emulator: Emulator, tmp_path: Path) -> Settings:
    return vm_settings(emulator, tmp_path, vm={"enabled": True, "ssh_port": closed_port(),
                                               "timeouts": {"ssh": 0.3, "active": 0.5}})


class Steps:
    """Stand-ins for the SSH-side steps, recording what ran."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.ran: list[str] = []
        self.fail_at: str | None = None
        self.real_wait_for_ssh = vm.wait_for_ssh
        monkeypatch.setattr(vm, "wait_for_ssh", self.wait_for_ssh)
        monkeypatch.setattr(vm, "prepare", self.prepare)

    def wait_for_ssh(self, config: Any, address: str, say: Callable[[str], None] = print, *,
                     known_hosts: Path) -> float:
        self.ran.append("ssh")
        if self.fail_at == "ssh":  # the real readiness probe, against a port nobody listens on
            return self.real_wait_for_ssh(config, address, say, known_hosts=known_hosts)
        if self.fail_at == "ssh-stub":
            raise CloudError("no SSH server answered (injected)")
        return 0.0

    def prepare(self, settings: Settings, say: Callable[[str], None] = print, **kwargs: Any) -> list[str]:
        self.ran.append("prepare")
        if self.fail_at == "prepare":
            raise CloudError("prepare-vm failed on root@127.0.0.1 (exit 1): injected")
        return ["prepare-vm: ready"]


def _inject(name: str, emulator: Emulator, steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    faults = {"server-quota": "server_quota", "server-error": "server_error",
              "never-active": "server_never_active", "volume-quota": "volume_quota",
              "floating-ip-quota": "floating_ip_quota"}
    if name in faults:
        emulator.faults[faults[name]] = True
    elif name == "credentials":
        emulator.cloud.application_credential_secret = "rotated"
    elif name == "unknown-image":
        emulator.cloud.images.clear()
    elif name in ("ssh", "prepare", "ssh-stub"):
        steps.fail_at = name
    elif name == "remote-docker":
        def broken(self: vm.RemoteDocker) -> None:
            raise CloudError("could not load the key into ssh-agent (injected)")

        monkeypatch.setattr(vm.RemoteDocker, "_start_agent", broken)


def body_for(name: str) -> Callable[[Settings], None]:
    def body(run_settings: Settings) -> None:
        assert run_settings.docker_host == f"ssh://ubuntu@127.0.0.1:{vm.config_from(run_settings).ssh_port}"
        if name == "pipeline-error":
            raise BuildError("docker build of base failed (exit 1); see base.build.log")
        if name == "exception":
            raise RuntimeError("a bug in a step")
        if name == "ctrl-c":
            raise KeyboardInterrupt
        if name == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(5)  # the handler raises before this returns
            raise AssertionError("SIGTERM did not interrupt the run")

    return body


CLOUD_STEPS = ["credentials", "unknown-image", "server-quota", "server-error", "never-active", "volume-quota",
               "floating-ip-quota"]
VM_STEPS = ["ssh", "ssh-stub", "prepare", "remote-docker"]
RUN_STEPS = ["pipeline-error", "exception", "ctrl-c", "sigterm", "success"]


@pytest.mark.parametrize("step", CLOUD_STEPS + VM_STEPS + RUN_STEPS)
def test_the_server_is_deleted_whatever_step_fails(step: str, emulator: Emulator, settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    steps = Steps(monkeypatch)
    _inject(step, emulator, steps, monkeypatch)
    said: list[str] = []
    expected: type[BaseException] | None = {"pipeline-error": BuildError, "exception": RuntimeError,
                                            "ctrl-c": KeyboardInterrupt, "sigterm": vm.Terminated,
                                            "success": None}.get(step, CIError)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        with api.build_environment(settings, said.append) as run_settings:
            body_for(step)(run_settings)
    except BaseException as exc:
        assert expected is not None and isinstance(exc, expected), f"{step}: unexpected {exc!r}"
    else:
        assert expected is None, f"{step}: nothing was raised"
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored
    assert emulator.servers() == [], f"{step}: the server survived"
    assert emulator.floating_ips() == [], f"{step}: a floating IP survived"
    for volume in emulator.volumes():
        assert volume["attachments"] == []  # kept, detached
    created = any(r.status == 202 for r in emulator.calls("POST", "/servers$"))
    if created:
        assert "tearing down the build VM containers-ci-build" in said
        assert emulator.calls("DELETE", "/servers/")
    else:
        assert step in ("credentials", "unknown-image", "server-quota")


def test_a_second_ctrl_c_during_teardown_does_not_stop_it(emulator: Emulator, settings: Settings,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    Steps(monkeypatch)
    emulator.cloud.delete_seconds = 0.6
    said: list[str] = []
    timer = threading.Timer(0.2, lambda: os.kill(os.getpid(), signal.SIGINT))
    with pytest.raises(KeyboardInterrupt), vm.build_vm(settings, said.append):
        timer.start()
        raise KeyboardInterrupt
    timer.join()
    assert emulator.servers() == []
    assert any("tearing the build VM down first" in line for line in said)


def test_a_failing_teardown_after_a_failure_keeps_the_first_error(emulator: Emulator, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    Steps(monkeypatch)
    settings = vm_settings(emulator, tmp_path, vm={"enabled": True, "timeouts": {"delete": 0.3}})
    said: list[str] = []
    with pytest.raises(RuntimeError, match="the build broke"), vm.build_vm(settings, said.append):
        emulator.faults["delete_stuck"] = True
        raise RuntimeError("the build broke")
    assert any("teardown of the build VM containers-ci-build failed" in line and "inv vm.teardown" in line
               for line in said)


def test_a_failing_teardown_after_success_is_an_error(emulator: Emulator, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    Steps(monkeypatch)
    settings = vm_settings(emulator, tmp_path, vm={"enabled": True, "timeouts": {"delete": 0.3}})
    failed = r"teardown of the build VM containers-ci-build failed.*inv vm.teardown"
    with pytest.raises(CloudError, match=failed), vm.build_vm(settings):
        emulator.faults["delete_stuck"] = True


def test_without_a_vm_profile_the_run_environment_is_a_no_op(emulator: Emulator, tmp_path: Path) -> None:
    settings = vm_settings(emulator, tmp_path, vm={"enabled": False})
    with api.build_environment(settings, print) as run_settings:
        assert run_settings is settings
    assert emulator.requests == []


def test_a_pinned_docker_host_wins_over_the_vm(emulator: Emulator, tmp_path: Path) -> None:
    settings = vm_settings(emulator, tmp_path, vm={"enabled": True}, docker={"host": "ssh://me@elsewhere"})
    with api.build_environment(settings, print) as run_settings:
        assert run_settings.docker_host == "ssh://me@elsewhere"
    assert vm.remote_settings(settings) is settings
    assert emulator.requests == []


def test_build_on_a_vm_profile_without_a_vm_says_how_to_start_one(emulator: Emulator, tmp_path: Path) -> None:
    settings = vm_settings(emulator, tmp_path, vm={"enabled": True})
    with pytest.raises(CloudError, match=r"no server containers-ci-build: run `inv vm.start` first"):
        api.docker_engine(settings)


def test_build_on_a_vm_profile_uses_the_running_vm(emulator: Emulator, settings: Settings,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    Steps(monkeypatch)
    vm.start(settings)
    engine_settings = vm.remote_settings(settings)
    assert engine_settings.docker_host == f"ssh://ubuntu@127.0.0.1:{vm.config_from(settings).ssh_port}"
    assert engine_settings.docker_client.endswith("/vm/containers-ci-build/bin/docker")
    vm.teardown(settings)
