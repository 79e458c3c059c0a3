"""The build VM's lifecycle: start (ci.openstack.cloud), prepare over SSH, remote Docker, teardown.

    start     find or create server, key pair, security group, volume, floating IP; wait for
              ACTIVE, then for SSH to answer with our key (a probe with a deadline, never a sleep)
    prepare   copy ci/openstack/prepare-vm to the VM and run it as root: volume mounted, /var/lib/docker
              on it, Docker restarted and answering; then check Docker answers over SSH from here
    build     the pipeline's Docker engine is the VM's, reached as DOCKER_HOST=ssh://user@address
    teardown  delete the server (waiting until it is gone), release the floating IP, keep the volume

`build_vm()` chains them for `inv build-all --profile cpouta` and tears down on every way out:
success, failure, exception, Ctrl-C and SIGTERM (a CI job being cancelled).

Remote Docker over SSH: the docker CLI runs the system `ssh` to reach the VM and takes no SSH
options of its own, and OpenSSH reads ~/.ssh/config from the passwd home (not $HOME). So each VM
gets a folder `<state>/vm/<name>/` with an `ssh_config` (our key, a private known_hosts, batch
mode, connection sharing), `bin/ssh` (runs /usr/bin/ssh -F that config) and `bin/docker` (the
real client with bin/ first on PATH). The pipeline's engine uses `bin/docker`; by hand:

    DOCKER_HOST=ssh://ubuntu@<address> <state>/vm/<name>/bin/docker ps

A key with a passphrase (CI_SSH_KEY_PASSPHRASE) is loaded into a private ssh-agent through
SSH_ASKPASS, so the passphrase travels in the environment of our own children only.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ci.config.build_hosts import BuildHostSettings
from ci.config.settings import Settings, VMConfig, vm_config
from ci.docker.remote import RemoteDocker, docker_host_url, known_hosts_file, ssh_settings, state_dir
from ci.errors import CIError, CloudError, ConfigError
from ci.hosts import SSHHost
from ci.openstack.cloud import BuildVMCloud, Say, VMInfo, open_cloud
from ci.shutdown import Terminated, on_signals, raise_on_signal, wait_until

PREPARE_SCRIPT = Path(__file__).resolve().parent / "prepare-vm"
REMOTE_SCRIPT = ".containers-ci/prepare-vm"  # relative to the SSH user's home on the VM


def _quiet(_: str) -> None:
    return None


def config_from(settings: Settings, **overrides: Any) -> VMConfig:
    """`ci.vm` of the chosen profile, with task flags on top."""
    if not any(value is not None for value in overrides.values()):
        return settings.vm
    return vm_config(settings.raw.get("vm") or {}, settings.project_dir, **overrides)


# --------------------------------------------------------------------------------------------
# readiness: SSH answers, then accepts our key
# --------------------------------------------------------------------------------------------

def ssh_banner(address: str, port: int, timeout: float = 5.0) -> bool:
    """True when something on address:port greets like an SSH server."""
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(4) == b"SSH-"
    except OSError:
        return False


def wait_for_ssh(config: VMConfig, address: str, say: Say = _quiet, *, known_hosts: Path) -> float:
    """Wait until sshd answers and accepts our key; return the seconds it took."""
    started = time.monotonic()
    timeout = config.timeouts.ssh
    say(f"waiting for SSH on {address}:{config.ssh_port} (at most {timeout:.0f}s)")
    if not wait_until(lambda: ssh_banner(address, config.ssh_port), timeout, config.poll_interval):
        raise CloudError(f"no SSH server answered on {address}:{config.ssh_port} within {timeout:.0f}s; "
                         f"check that security group {config.security_group} allows port 22 from here "
                         f"(ci.vm.ssh_cidr), and the console log "
                         f"(`openstack console log show {config.name}`)")
    last_error = ""

    def login() -> bool:
        nonlocal last_error
        host = SSHHost(ssh_settings(config, address, known_hosts))
        try:
            host.run(["true"], timeout=30)
            return True
        except CIError as exc:
            last_error = str(exc)
            return False
        finally:
            host.close()

    remaining = max(timeout - (time.monotonic() - started), config.poll_interval)
    if not wait_until(login, remaining, config.poll_interval):
        raise CloudError(f"SSH on {address}:{config.ssh_port} does not accept {config.ssh_user} with key "
                         f"{config.ssh_key} after {timeout:.0f}s ({last_error}); check ci.vm.ssh_user for "
                         f"this image and that key pair {config.key_name} holds {config.public_key}")
    return time.monotonic() - started


# --------------------------------------------------------------------------------------------
# the steps, each usable alone (inv vm.start / vm.prepare / vm.teardown / vm.status)
# --------------------------------------------------------------------------------------------

def start(settings: Settings, say: Say = _quiet, *, vm_cloud: BuildVMCloud | None = None,
          info: VMInfo | None = None, **overrides: Any) -> VMInfo:
    """Find or create the VM and everything it needs; return once SSH accepts our key."""
    config = vm_cloud.config if vm_cloud is not None else config_from(settings, **overrides)
    vm_cloud = vm_cloud or open_cloud(config, say)
    info = info or VMInfo(name=config.name)
    vm_cloud.start(info)
    if info.address is None:
        raise CloudError(f"server {config.name} has no floating IP; check ci.vm.floating_ip_pool")
    if info.created:
        RemoteDocker(settings, config, info.address).reset_known_hosts()
    waited = wait_for_ssh(config, info.address, say, known_hosts=known_hosts_file(settings, config))
    info.notes.append(f"SSH answered after {waited:.0f}s")
    return info


def prepare_command(config: VMConfig, info: VMInfo, device: str | None = None) -> list[str]:
    """The prepare-vm command line: the volume (by id, else the device), our settings, extra args."""
    command = ["sh", REMOTE_SCRIPT, "--mount-point", config.mount_point, "--docker-user", config.ssh_user,
               "--timeout", str(int(min(config.timeouts.prepare, 600)))]
    if info.volume_id:
        command += ["--volume-id", info.volume_id]
    device = device or config.device or info.volume_device
    if device:
        command += ["--device", device]
    command += list(config.prepare_args)
    if config.ssh_user != "root":
        command = ["sudo", "-n", *command]
    return command


def prepare_host(config: VMConfig, host: Any, info: VMInfo, say: Say = _quiet,
                 device: str | None = None) -> list[str]:
    """Copy prepare-vm to the VM and run it; return its report lines."""
    say(f"running prepare-vm on {host.name}")
    upload = f"{REMOTE_SCRIPT}.{os.getpid()}-{time.monotonic_ns()}"
    host.put(PREPARE_SCRIPT, upload)
    host.run(["mv", "-f", upload, REMOTE_SCRIPT])  # atomic: a prepare-vm still running keeps its copy
    command = prepare_command(config, info, device)
    result = host.run(command, timeout=config.timeouts.prepare, check=False)
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    if not result.ok:
        tail = " / ".join(lines[-4:]) or f"exit {result.returncode}"
        raise CloudError(f"prepare-vm failed on {host.name} (exit {result.returncode}): {tail}; to debug, "
                         f"run it by hand: ssh -i {config.ssh_key} -p {config.ssh_port} {host.name} "
                         f"{shlex.join(command)}")
    return lines


def locate(settings: Settings, say: Say = _quiet, *, address: str | None = None, **overrides: Any) -> VMInfo:
    """The running VM as the cloud sees it (or as given: --address skips the cloud)."""
    config = config_from(settings, **overrides)
    if address:
        return VMInfo(name=config.name, status="given", address=address)
    info = open_cloud(config, say).status()
    if info.server_id is None:
        raise CloudError(f"no server {config.name}: run `inv vm.start` first (or `inv build-all`, which "
                         "does it all)")
    if info.status != "ACTIVE" or not info.address:
        raise CloudError(f"server {config.name} is {info.status} with address {info.address or 'none'}; "
                         "`inv vm.start` finishes what is missing")
    return info


def prepare(settings: Settings, say: Say = _quiet, *, info: VMInfo | None = None, address: str | None = None,
            device: str | None = None, **overrides: Any) -> list[str]:
    """Run prepare-vm on the VM, then check that its Docker answers over SSH from here."""
    config = config_from(settings, **overrides)
    info = info or locate(settings, say, address=address, **overrides)
    assert info.address is not None
    host = SSHHost(ssh_settings(config, info.address, known_hosts_file(settings, config)))
    try:
        lines = prepare_host(config, host, info, say, device)
    finally:
        host.close()
    remote = RemoteDocker(settings, config, info.address)
    try:
        version = remote.ping(timeout=min(config.timeouts.ssh, 120))
    finally:
        remote.close()
    return [*lines, f"Docker {version} answers over SSH: DOCKER_HOST={remote.url} {remote.client} ..."]


def teardown(settings: Settings, say: Say = _quiet, *, vm_cloud: BuildVMCloud | None = None,
             **overrides: Any) -> list[str]:
    """Delete the server and release its floating IP; the volume stays. A no-op when nothing exists."""
    config = vm_cloud.config if vm_cloud is not None else config_from(settings, **overrides)
    vm_cloud = vm_cloud or open_cloud(config, say)
    lines = vm_cloud.teardown()
    known_hosts_file(settings, config).unlink(missing_ok=True)
    return lines


def status(settings: Settings, **overrides: Any) -> VMInfo:
    config = config_from(settings, **overrides)
    return open_cloud(config).status()


def describe(settings: Settings, info: VMInfo, **overrides: Any) -> list[str]:
    """What a person needs to reach the VM by hand, one line each."""
    config = config_from(settings, **overrides)
    if info.server_id is None:
        return [f"server {config.name}: none"] + ([f"volume {config.volume}: {info.volume_status} (kept)"]
                                                   if info.volume_id else [f"volume {config.volume}: none"])
    lines = [f"server {config.name}: {info.status} ({info.server_id})",
             f"address: {info.address or 'no floating IP'}" + (f" (fixed {info.fixed_address})"
                                                                if info.fixed_address else "")]
    if info.volume_id:
        lines.append(f"volume {config.volume}: {info.volume_status}"
                     + (f" as {info.volume_device}" if info.volume_device else ""))
    if info.address:
        port = f" -p {config.ssh_port}" if config.ssh_port != 22 else ""
        folder = state_dir(settings, config)
        lines.append(f"ssh: ssh -i {config.ssh_key}{port} {config.ssh_user}@{info.address}")
        lines.append(f"docker: DOCKER_HOST={docker_host_url(config, info.address)} {folder / 'bin' / 'docker'} "
                     "info   (after `inv vm.prepare`)")
    return lines + info.notes


def remote_settings(settings: Settings, say: Say = _quiet) -> Settings:
    """Settings whose Docker engine is the running build VM's, when the profile builds on a VM.

    A no-op unless ci.vm.enabled is true and no Docker host is set already (build_vm sets one).
    """
    if settings.docker_host:
        return settings
    config = config_from(settings)
    if not config.enabled:
        return settings
    info = locate(settings, say)
    assert info.address is not None
    key = f"{state_dir(settings, config)} {info.address}"
    remote = _REMOTES.get(key)
    if remote is None or remote._closed:
        remote = _REMOTES[key] = RemoteDocker(settings, config, info.address)
        atexit.register(remote.close)  # no shared SSH connection or agent outlives this process
    return remote.apply(settings)


_REMOTES: dict[str, RemoteDocker] = {}


# --------------------------------------------------------------------------------------------
# the whole lifecycle around a build, with teardown on every way out
# --------------------------------------------------------------------------------------------

__all__ = ["Terminated"]  # SIGTERM arrives as ci.shutdown.Terminated, so every `finally` runs as for Ctrl-C


@contextlib.contextmanager
def build_vm(settings: Settings, say: Say = _quiet, **overrides: Any) -> Iterator[Settings]:
    """start -> prepare -> yield settings whose Docker engine is the VM's -> ALWAYS teardown.

    The teardown runs whatever happens inside or before the `yield` (a failed step, an exception,
    Ctrl-C, SIGTERM); a second Ctrl-C during teardown is noted and ignored. When the body failed,
    a failing teardown is reported through `say` and the body's exception propagates; when the
    body succeeded, a failing teardown raises CloudError.
    """
    config = config_from(settings, **overrides)
    cloud: BuildVMCloud | None = None
    remote: RemoteDocker | None = None
    failed = False
    with on_signals(raise_on_signal):
        try:
            cloud = open_cloud(config, say)
            info = VMInfo(name=config.name)
            start(settings, say, vm_cloud=cloud, info=info)
            assert info.address is not None
            say(f"VM {config.name} is up at {info.address}")
            for line in prepare(settings, say, info=info, **overrides):
                say(line)
            remote = RemoteDocker(settings, config, info.address)
            yield remote.apply(settings)
        except BaseException:
            failed = True
            raise
        finally:
            _guarded_teardown(settings, config, cloud, remote, say, failed)


def _guarded_teardown(settings: Settings, config: VMConfig, cloud: BuildVMCloud | None,
                      remote: RemoteDocker | None, say: Say, failed: bool) -> None:
    def note(number: int, frame: FrameType | None) -> None:
        say("tearing the build VM down first; it takes a moment (the server must not be left running)")

    with on_signals(note):
        if remote is not None:
            with contextlib.suppress(Exception):
                remote.close()
        if cloud is None:
            say("no connection to the cloud was made, so there is nothing to tear down")
            return
        say(f"tearing down the build VM {config.name}")
        try:
            for line in teardown(settings, say, vm_cloud=cloud):
                say(line)
        except Exception as exc:
            message = (f"teardown of the build VM {config.name} failed: {exc}; delete it with "
                       "`inv vm.teardown` (or `openstack server delete`) so it does not keep running")
            if failed:
                say(message)
                return
            raise CloudError(message) from None


@contextlib.contextmanager
def for_run(settings: Settings, say: Say = _quiet) -> Iterator[Settings]:
    """The settings a run builds with: unchanged, or with ci.vm.enabled a fresh build VM's engine.

    `build_vm` around the run when the profile builds on a VM (and no Docker host is pinned);
    otherwise a no-op, so a front end can always wrap its run in it.
    """
    config = config_from(settings)
    if settings.docker_host or not config.enabled:
        yield settings
        return
    with (build_fleet(settings, say) if config.count > 1 else build_vm(settings, say)) as vm_settings:
        yield vm_settings


# --------------------------------------------------------------------------------------------
# several build VMs (ci.vm.count, `inv vm.start --count N`): one pool of build hosts
# --------------------------------------------------------------------------------------------

def fleet(config: VMConfig) -> list[VMConfig]:
    """The configurations of `config.count` build VMs: `<name>-<i>` with volume `<volume>-<i>`.

    One VM keeps the configured names (as before). Each VM has its own volume (a volume attaches
    to one server) and its own state folder; a pre-allocated floating IP can serve only one VM.
    """
    if config.count == 1:
        return [config]
    if config.floating_ip:
        raise ConfigError(f"ci.vm.floating_ip: one pre-allocated address cannot serve {config.count} VMs; "
                          "unset it (each VM gets an address from ci.vm.floating_ip_pool) or set ci.vm.count: 1")
    longest = f"{config.name}-{config.count}"
    if len(longest) > 64 or len(f"{config.volume}-{config.count}") > 64:
        raise ConfigError(f"ci.vm.name: '{longest}' (with its index) is longer than 64 characters; "
                          "shorten ci.vm.name or ci.vm.volume")
    return [config.model_copy(update={"name": f"{config.name}-{index}", "volume": f"{config.volume}-{index}"})
            for index in range(1, config.count + 1)]


def _each(configs: list[VMConfig], work: Callable[[VMConfig], Any], *, first_alone: bool = False) -> list[Any]:
    """`work` for every VM at once (each waits on the cloud and on SSH); every failure is reported.

    `first_alone`: the first VM's work runs before the others start, so what the VMs share (the key
    pair, the security group) is created once, not raced for.
    """
    from concurrent.futures import ThreadPoolExecutor

    results: list[Any] = []
    problems: list[str] = []
    batches = [configs[:1], configs[1:]] if first_alone else [configs]
    for batch in batches:
        if problems:
            break
        with ThreadPoolExecutor(max_workers=max(1, min(len(batch), 16))) as pool:
            futures = [pool.submit(work, config) for config in batch]
        for config, future in zip(batch, futures, strict=True):
            try:
                results.append(future.result())
            except CIError as exc:
                problems.append(f"{config.name}: {exc}")
    if problems:
        raise CloudError("; ".join(problems))
    return results


def start_fleet(settings: Settings, say: Say = _quiet, **overrides: Any) -> list[VMInfo]:
    """Find or create every build VM (`count` of them, at once); return once SSH accepts our key on each."""
    configs = fleet(config_from(settings, **overrides))
    return _each(configs, lambda config: start(settings, say, vm_cloud=open_cloud(config, say)), first_alone=True)


def teardown_fleet(settings: Settings, say: Say = _quiet, **overrides: Any) -> list[str]:
    """Delete every build VM of the fleet (a no-op for those that do not exist); volumes stay."""
    configs = fleet(config_from(settings, **overrides))
    return [line for lines in _each(configs, lambda config: teardown(settings, say, vm_cloud=open_cloud(config, say)))
            for line in lines]


def status_fleet(settings: Settings, **overrides: Any) -> list[tuple[VMConfig, VMInfo]]:
    configs = fleet(config_from(settings, **overrides))
    return list(zip(configs, _each(configs, lambda config: open_cloud(config).status()), strict=True))


def names(settings: Settings, **overrides: Any) -> list[str]:
    """The server names of the fleet (the label each VM's runners carry besides the common ones)."""
    return [config.name for config in fleet(config_from(settings, **overrides))]


def pool_settings(settings: Settings, remotes: list[RemoteDocker]) -> Settings:
    """Settings whose build hosts are the VMs' engines (over SSH), sharing ci.build_pool's registry."""
    builds = int(settings.limits.get("build", 2))
    hosts = tuple(BuildHostSettings(name=remote.config.name, address=remote.url, client=remote.client, builds=builds)
                  for remote in remotes)
    for remote in remotes:
        remote.apply(settings)  # its ssh-agent, when the key has a passphrase
    return settings.model_copy(update={"build_hosts": hosts})


@contextlib.contextmanager
def build_fleet(settings: Settings, say: Say = _quiet) -> Iterator[Settings]:
    """start -> prepare every VM -> yield settings whose build hosts are the VMs -> ALWAYS tear all down."""
    configs = fleet(config_from(settings))
    if not settings.build_pool.registry:
        raise ConfigError(f"ci.build_pool.registry: {len(configs)} build VMs share images and cache through a "
                          "build registry; set it to a host:port every VM reaches (see docs/build-hosts.md)")
    remotes: list[RemoteDocker] = []
    clouds: list[BuildVMCloud] = []
    failed = False
    with on_signals(raise_on_signal):
        try:
            clouds = [open_cloud(config, say) for config in configs]
            infos = _each(configs, lambda config: start(settings, say, vm_cloud=clouds[configs.index(config)]),
                          first_alone=True)
            for config, info in zip(configs, infos, strict=True):
                say(f"VM {config.name} is up at {info.address}")
                for line in prepare(settings, say, info=info, name=config.name, volume=config.volume):
                    say(line)
                remotes.append(RemoteDocker(settings, config, info.address))
            yield pool_settings(settings, remotes)
        except BaseException:
            failed = True
            raise
        finally:
            for index, config in enumerate(configs):
                remote = next((r for r in remotes if r.config.name == config.name), None)
                cloud = clouds[index] if index < len(clouds) else None
                _guarded_teardown(settings, config, cloud, remote, say, failed)
