"""A Docker engine on another machine, reached over SSH: the docker CLI with its own ssh_config (our key,
a private known_hosts with trust on first use), connection sharing, and an ssh-agent of its own when
the key has a passphrase (read from the environment, never from a flag).

The build VM (ci.openstack.vm) is the user today; any `ssh://` engine can be driven the same way.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from ci.config.settings import PASSPHRASE_ENV, Settings, SSHSettings, VMConfig
from ci.docker.engine import find_docker_client
from ci.errors import CloudError
from ci.shutdown import wait_until


def state_dir(settings: Settings, config: VMConfig) -> Path:
    return settings.state_dir / "vm" / config.name


def known_hosts_file(settings: Settings, config: VMConfig) -> Path:
    """The VM's private known_hosts: emptied when a server is created, so its first key is recorded
    (trust on first use) and a changed key behind the same address is refused until then."""
    return state_dir(settings, config) / "known_hosts"


def ssh_settings(config: VMConfig, address: str, known_hosts: Path) -> SSHSettings:
    return SSHSettings(host=address, user=config.ssh_user, port=config.ssh_port,
                       key_filename=str(config.ssh_key), connect_timeout=20.0,
                       known_hosts=str(known_hosts), trust_on_first_use=True)


def docker_host_url(config: VMConfig, address: str) -> str:
    port = f":{config.ssh_port}" if config.ssh_port != 22 else ""
    return f"ssh://{config.ssh_user}@{address}{port}"


class RemoteDocker:
    """The docker CLI set up to reach the VM's engine over SSH with our key and known_hosts."""

    def __init__(self, settings: Settings, config: VMConfig, address: str,
                 env: Mapping[str, str] | None = None):
        self.config = config
        self._settings = settings
        self.address = address
        self.url = docker_host_url(config, address)
        self.folder = state_dir(settings, config)
        self.bin = self.folder / "bin"
        self.real_client = find_docker_client(settings.docker_client)[0]
        self._env = os.environ if env is None else env
        self._agent: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._write_files()

    @property
    def client(self) -> str:
        return str(self.bin / "docker")

    @property
    def ssh_config(self) -> Path:
        return self.folder / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return known_hosts_file(self._settings, self.config)

    def _control_dir(self) -> Path | None:
        """A short, private folder for connection-sharing sockets (unix socket paths are limited)."""
        folder = Path(tempfile.gettempdir()) / f"containers-ci-ssh-{os.getuid()}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            info = folder.stat()
        except OSError:
            return None
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None
        return folder

    def _write_files(self) -> None:
        self.bin.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        lines = [
            "# Written by containers-ci (ci/openstack/vm.py) for the docker CLI's SSH connections to the build VM.",
            "Host *",
            f"  IdentityFile {self.config.ssh_key}",
            "  IdentitiesOnly yes",
            "  BatchMode yes",
            "  StrictHostKeyChecking accept-new",
            f"  UserKnownHostsFile {self.known_hosts}",
            "  ConnectTimeout 20",
            "  ServerAliveInterval 30",
            "  LogLevel ERROR",
        ]
        control = self._control_dir()
        if control is not None:
            lines += [f"  ControlPath {control}/%C", "  ControlMaster auto", "  ControlPersist 120"]
        self.ssh_config.write_text("\n".join(lines) + "\n", encoding="utf-8")
        agent = f"SSH_AUTH_SOCK={shlex.quote(str(self._agent_socket))}; export SSH_AUTH_SOCK\n" \
            if self._wants_agent() else ""
        config = shlex.quote(str(self.ssh_config))
        self._script(self.bin / "ssh", f"{agent}exec /usr/bin/ssh -F {config} \"$@\"\n")
        self._script(self.bin / "docker", f"PATH={shlex.quote(str(self.bin))}:$PATH; export PATH\n"
                                          f"exec {shlex.quote(self.real_client)} \"$@\"\n")

    @staticmethod
    def _script(path: Path, body: str) -> None:
        text = "#!/bin/sh\n# Written by containers-ci (ci/openstack/vm.py): see the module's docstring.\n" + body
        temporary = path.with_name(path.name + ".tmp")
        temporary.write_text(text, encoding="utf-8")
        os.chmod(temporary, 0o700)
        os.replace(temporary, path)

    # ---- a key with a passphrase ---------------------------------------------------------------
    @property
    def _agent_socket(self) -> Path:
        return self.folder / "agent.sock"

    def _wants_agent(self) -> bool:
        return bool(self._env.get(PASSPHRASE_ENV))

    def _start_agent(self) -> None:
        if not self._wants_agent() or self._agent is not None:
            return
        sock = self._agent_socket
        sock.unlink(missing_ok=True)
        self._agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       start_new_session=True)
        atexit.register(self.close)
        if not wait_until(sock.exists, 10, 0.05):
            raise CloudError("ssh-agent did not start; load the key into your own agent "
                             "(SSH_AUTH_SOCK) instead")
        askpass = self.folder / "askpass"
        self._script(askpass, f"printf '%s\\n' \"${PASSPHRASE_ENV}\"\n")
        env = {**self._env, "SSH_AUTH_SOCK": str(sock), "SSH_ASKPASS": str(askpass),
               "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": self._env.get("DISPLAY", ":0")}
        result = subprocess.run(["ssh-add", "-q", "-t", "43200", str(self.config.ssh_key)], env=env,
                                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                                check=False)
        if result.returncode != 0:
            raise CloudError(f"could not load {self.config.ssh_key} into ssh-agent: "
                             f"{result.stderr.strip() or 'exit ' + str(result.returncode)}; check "
                             f"{PASSPHRASE_ENV}")

    # ---- use -----------------------------------------------------------------------------------
    def apply(self, settings: Settings) -> Settings:
        """The settings whose Docker engine is the VM's."""
        self._start_agent()
        return settings.with_docker(host=self.url, client=self.client)

    def ping(self, timeout: float = 120.0) -> str:
        """Docker's server version over SSH; retried briefly (a new docker group needs a new session)."""
        self._start_agent()
        env = {**self._env, "DOCKER_HOST": self.url}
        last = ""

        def answers() -> bool:
            nonlocal last
            try:
                result = subprocess.run([self.client, "version", "--format", "{{.Server.Version}}"], env=env,
                                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
                                        check=False)
            except subprocess.TimeoutExpired:
                last = "timed out"
                return False
            last = (result.stdout.strip() if result.returncode == 0 else "") or \
                (result.stderr.strip().splitlines() or ["no answer"])[-1]
            return result.returncode == 0

        if not wait_until(answers, timeout, min(self.config.poll_interval, 2.0)):
            raise CloudError(f"the VM's Docker engine does not answer over SSH ({self.url}): {last}; try "
                             f"`DOCKER_HOST={self.url} {self.client} version`")
        return last

    def reset_known_hosts(self) -> None:
        """A new server behind a reused address has a new host key: forget the old one."""
        self.known_hosts.unlink(missing_ok=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._control_dir() is not None:
            subprocess.run(["/usr/bin/ssh", "-F", str(self.ssh_config), "-O", "exit",
                            "-p", str(self.config.ssh_port), f"{self.config.ssh_user}@{self.address}"],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=15, check=False)
        if self._agent is not None:
            self._agent.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._agent.wait(timeout=5)
            self._agent_socket.unlink(missing_ok=True)
            self._agent = None
