"""The local default's services, installed and started idempotently (`inv local.up`).

Each service is a small recipe: is it answering? if not, is it installed? install it from
Debian, start it, and wait until it answers (a readiness probe with a timeout, never a sleep).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ci.buildhosts import local_engines
from ci.errors import CIError

LOG_DIR = Path("/var/log/containers-ci")


@dataclass(frozen=True)
class Service:
    name: str
    packages: tuple[str, ...]
    binaries: tuple[str, ...]
    ready: Callable[[], bool]
    start: Callable[[], None]
    timeout: float = 60.0


def _quiet(command: Sequence[str], timeout: float = 10) -> bool:
    try:
        return subprocess.run(list(command), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              timeout=timeout, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _spawn(command: Sequence[str], log_name: str, env: dict[str, str] | None = None) -> None:
    """Start a daemon detached from us, its output in /var/log/containers-ci/."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    with (LOG_DIR / log_name).open("ab") as log:
        subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True, env={**os.environ, **(env or {})})


def docker_ready() -> bool:
    return _quiet(["/usr/bin/docker", "version"]) if Path("/usr/bin/docker").exists() else _quiet(["docker", "version"])


def start_docker() -> None:
    _spawn(["dockerd"], "dockerd.log")


DOCKER = Service("docker", ("docker.io", "debootstrap"), ("dockerd", "debootstrap"), docker_ready, start_docker)

# Two more engines (own data root, exec root, socket, no bridge): the build-hosts pool's tests and
# `inv -f ci/buildhosts/local-pool.yaml build-all` spread builds over them (ci/buildhosts/local_engines.py).
BUILD_ENGINES = Service("build engines", ("docker.io",), ("dockerd",), local_engines.all_ready,
                        local_engines.start_all)


def apt_install(packages: Sequence[str], say: Callable[[str], None]) -> None:
    say(f"installing {' '.join(packages)} from Debian")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                                                    *packages]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise CIError(f"`{' '.join(command)}` failed: {result.stderr.strip().splitlines()[-1:]}")


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.2
    while time.monotonic() < deadline:
        if probe():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 2.0)
    raise CIError(f"{what} did not become ready within {timeout:.0f}s; see {LOG_DIR}")


def ensure(service: Service, say: Callable[[str], None]) -> str:
    if service.ready():
        return f"{service.name}: already running"
    missing = [binary for binary in service.binaries if shutil.which(binary) is None
               and not Path("/usr/sbin", binary).exists() and not Path("/sbin", binary).exists()]
    if missing:
        if os.geteuid() != 0:
            raise CIError(f"{service.name} is not installed ({', '.join(missing)} missing); run `inv local.up` as root")
        apt_install(service.packages, say)
    service.start()
    wait_until(service.ready, service.timeout, service.name)
    return f"{service.name}: started"


def up(services: Sequence[Service], say: Callable[[str], None]) -> list[str]:
    return [ensure(service, say) for service in services]


# --------------------------------------------------------------------------------------------
# sshd on 127.0.0.1: a loopback "remote" site and build VM for the SSH code paths
# --------------------------------------------------------------------------------------------

SSHD_DIR = Path("/etc/containers-ci/sshd")
SSHD_PORT = 2222


def loopback_key() -> Path:
    """The throw-away client key that the loopback sshd accepts (created by `inv local.up`)."""
    from ci.config.settings import default_state_dir

    return default_state_dir() / "ssh" / "id_ed25519"


def loopback_known_hosts() -> Path:
    """A known_hosts file holding the loopback sshd's host key, for strict host-key checking against it.

    Written from the host key `inv local.up` made (readable here, as this machine runs that sshd), so
    nothing is trusted on first use; rewritten when the host key changes.
    """
    from ci.config.settings import default_state_dir

    path = default_state_dir() / "ssh" / "known_hosts"
    public = (SSHD_DIR / "ssh_host_ed25519_key.pub").read_text(encoding="utf-8").split()
    line = f"[127.0.0.1]:{SSHD_PORT} {public[0]} {public[1]}\n"
    if not path.is_file() or path.read_text(encoding="utf-8") != line:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = path.with_name(f".known_hosts.{os.getpid()}")
        temporary.write_text(line, encoding="utf-8")
        os.replace(temporary, path)
    return path


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            return sock.recv(4).startswith(b"SSH")
    except OSError:
        return False


def sshd_ready() -> bool:
    return _port_open(SSHD_PORT) and loopback_key().exists()


def start_sshd() -> None:
    SSHD_DIR.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = SSHD_DIR / "ssh_host_ed25519_key"
    if not host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    key = loopback_key()
    key.parent.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "containers-ci loopback",
                        "-f", str(key)], check=True)
    authorized = SSHD_DIR / "authorized_keys"
    public = key.with_suffix(".pub").read_text()
    existing = authorized.read_text() if authorized.exists() else ""
    if public not in existing:
        authorized.write_text(existing + public)
    authorized.chmod(0o600)
    config = SSHD_DIR / "sshd_config"
    config.write_text(
        f"Port {SSHD_PORT}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
        f"AuthorizedKeysFile {authorized} .ssh/authorized_keys\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nAllowTcpForwarding yes\n"
        f"PidFile {SSHD_DIR}/sshd.pid\nSubsystem sftp internal-sftp\nMaxSessions 50\nMaxStartups 50\n"
    )
    if not _port_open(SSHD_PORT):
        _spawn(["/usr/sbin/sshd", "-f", str(config), "-E", str(LOG_DIR / "sshd.log")], "sshd-start.log")
    loopback_known_hosts()


SSHD = Service("sshd", ("openssh-server", "openssh-client"), ("sshd", "ssh-keygen"), sshd_ready, start_sshd)


# --------------------------------------------------------------------------------------------
# MUNGE + one-node Slurm: the scheduler of the local default
# --------------------------------------------------------------------------------------------

SLURM_CONF = Path("/etc/slurm/slurm.conf")
SLURM_MARKER = "# written by containers-ci: `inv local.up` rewrites it"
OUR_MARK = "# written by containers-ci"  # also the start of earlier markers
SLURM_PARTITION = "debug"
SLURM_JOBCOMP_LOG = LOG_DIR / "slurm-jobcomp.log"


def munge_ready() -> bool:
    return _quiet(["sh", "-c", "munge -n | unmunge >/dev/null"])


def start_munge() -> None:
    """munged runs as the munge user, with its socket folder in /run (a tmpfs: gone after reboot)."""
    run_dir = Path("/run/munge")
    run_dir.mkdir(parents=True, exist_ok=True)
    key = Path("/etc/munge/munge.key")
    if not key.exists():
        subprocess.run(["mungekey", "--create", "--keyfile", str(key)], check=True, capture_output=True)
    for path in (run_dir, key, Path("/var/lib/munge"), Path("/var/log/munge")):
        if path.exists():
            shutil.chown(path, "munge", "munge")
    key.chmod(0o400)
    _spawn(["runuser", "-u", "munge", "--", "/usr/sbin/munged", "--foreground", "--force"], "munged.log")


MUNGE = Service("munge", ("munge",), ("munged", "munge", "unmunge"), munge_ready, start_munge)


def _node_states() -> list[str]:
    try:
        result = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split() if result.returncode == 0 else []


# sinfo's short states of a node that takes jobs. `plnd` is IDLE+PLANNED: the backfill scheduler has
# set the idle node aside for a pending job, and the flag can outlive that job by a scheduling cycle.
NODE_TAKES_JOBS = ("idle", "mix", "alloc", "comp", "plnd")


def slurm_ready() -> bool:
    """slurmd runs, the controller answers, and the node takes jobs (idle, or busy with some)."""
    if not _pid_alive(Path("/run/slurmd.pid")):
        return False  # slurmctld would go on calling the node idle for SlurmdTimeout
    return nodes_take_jobs(_node_states())


def nodes_take_jobs(states: list[str]) -> bool:
    """Every node in sinfo's short states (`%t`) takes jobs; a trailing `*` means it does not answer."""
    return bool(states) and all(state.rstrip("*~#!%$@^-") in NODE_TAKES_JOBS and not state.endswith("*")
                                for state in states)


def slurm_conf(node_line: str, hostname: str) -> str:
    """slurm.conf for one node: root runs everything, no cgroups, no accounting database.

    `slurmd -C` gives the node's real CPUs and memory. Job completion logging (jobcomp/filetxt)
    lets `sacct -c` answer for jobs that left slurmctld's memory; KillWait=5 makes cancelled and
    timed-out jobs end within seconds.
    """
    fields = dict(item.split("=", 1) for item in node_line.split() if "=" in item)
    memory = int(fields.get("RealMemory", "1024"))
    fields["RealMemory"] = str(max(1, memory * 95 // 100))  # leave room: more than the node has drains it
    node = " ".join(f"{key}={value}" for key, value in fields.items() if key not in ("UpTime",))
    return "\n".join([
        SLURM_MARKER,
        "ClusterName=containers-ci",
        f"SlurmctldHost={hostname}(127.0.0.1)",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "MpiDefault=none",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ReturnToService=2",
        "StateSaveLocation=/var/spool/slurmctld",
        "SlurmdSpoolDir=/var/spool/slurmd",
        "SlurmctldPidFile=/run/slurmctld.pid",
        "SlurmdPidFile=/run/slurmd.pid",
        f"SlurmctldLogFile={LOG_DIR / 'slurmctld.log'}",
        f"SlurmdLogFile={LOG_DIR / 'slurmd.log'}",
        "AccountingStorageType=accounting_storage/none",
        "JobAcctGatherType=jobacct_gather/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={SLURM_JOBCOMP_LOG}",
        "MinJobAge=300",
        "KillWait=5",
        "InactiveLimit=0",
        f"{node} NodeAddr=127.0.0.1 State=UNKNOWN",
        f"PartitionName={SLURM_PARTITION} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _write_slurm_conf() -> bool:
    """Write slurm.conf if it differs; never overwrite one we did not write. True if it changed."""
    detected = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    node_line = next((line for line in detected.splitlines() if line.startswith("NodeName=")), "")
    if not node_line:
        raise CIError(f"`slurmd -C` printed no NodeName line: {detected.strip()}")
    hostname = node_line.split()[0].split("=", 1)[1]
    text = slurm_conf(node_line, hostname)
    if SLURM_CONF.exists():
        current = SLURM_CONF.read_text(encoding="utf-8")
        if current == text:
            return False
        if not current.startswith(OUR_MARK):
            raise CIError(f"{SLURM_CONF} exists and was not written by containers-ci; move it away "
                          "(or run a Slurm of your own and skip `inv local.up`)")
    SLURM_CONF.parent.mkdir(parents=True, exist_ok=True)
    SLURM_CONF.write_text(text, encoding="utf-8")
    return True


def _pid_alive(pid_file: Path) -> bool:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return False
    return Path(f"/proc/{pid}").exists()


def start_slurm() -> None:
    """slurmctld, then slurmd; a node left DOWN by an earlier stop is resumed."""
    if not munge_ready():
        raise CIError("MUNGE does not answer, and Slurm authenticates with it; start munge first")
    changed = _write_slurm_conf()
    for folder in (Path("/var/spool/slurmctld"), Path("/var/spool/slurmd"), LOG_DIR):
        folder.mkdir(parents=True, exist_ok=True)
    if changed and _quiet(["scontrol", "ping"]):
        _quiet(["scontrol", "reconfigure"])
    if not _quiet(["scontrol", "ping"]):
        _spawn(["slurmctld", "-D"], "slurmctld-start.log")
        wait_until(lambda: _quiet(["scontrol", "ping"]), 30, "slurmctld")
    if not _pid_alive(Path("/run/slurmd.pid")):
        _spawn(["slurmd", "-D"], "slurmd-start.log")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        states = _node_states()
        if states and not any(state.endswith("*") for state in states):  # "*": slurmd not heard from yet
            if any(state.startswith(("down", "drain", "drng", "fail")) for state in states):
                _quiet(["scontrol", "update", "NodeName=ALL", "State=RESUME"])
            return
        time.sleep(0.5)


SLURM = Service("slurm", ("slurm-wlm", "slurm-client", "munge"), ("slurmctld", "slurmd", "sbatch", "squeue"),
                slurm_ready, start_slurm, timeout=90.0)


# --------------------------------------------------------------------------------------------
# docker-registry on 127.0.0.1:5000 (plain http: dockerd treats 127.0.0.0/8 as insecure already)
# --------------------------------------------------------------------------------------------

REGISTRY_ADDRESS = "127.0.0.1:5000"
REGISTRY_CONFIG = Path("/etc/containers-ci/registry/config.yml")
REGISTRY_STORAGE = Path("/var/lib/docker-registry")


def registry_ready() -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{REGISTRY_ADDRESS}/v2/", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_registry() -> None:
    """Debian's distribution 2.8 with our own config: loopback only, no auth, deletes allowed.

    (Debian's default config listens on every interface and points htpasswd at a folder.)
    """
    REGISTRY_CONFIG.parent.mkdir(parents=True, exist_ok=True)
    REGISTRY_STORAGE.mkdir(parents=True, exist_ok=True)
    REGISTRY_CONFIG.write_text(
        "version: 0.1\n"
        "log: {level: info, fields: {service: registry}}\n"
        f"storage: {{filesystem: {{rootdirectory: {REGISTRY_STORAGE}}}, delete: {{enabled: true}}, "
        "cache: {blobdescriptor: inmemory}}\n"
        f"http: {{addr: '{REGISTRY_ADDRESS}', headers: {{X-Content-Type-Options: [nosniff]}}}}\n",
        encoding="utf-8")
    _spawn(["docker-registry", "serve", str(REGISTRY_CONFIG)], "registry.log")


REGISTRY = Service("registry", ("docker-registry",), ("docker-registry",), registry_ready, start_registry)


# --------------------------------------------------------------------------------------------
# Charliecloud: the real HPC engine of the local default (nothing to start, only to install)
# --------------------------------------------------------------------------------------------

CHARLIECLOUD_PACKAGES = ("charliecloud", "python3-lark", "squashfs-tools", "squashfuse", "pigz")


def charliecloud_ready() -> bool:
    """Installed and usable: ch-run starts (it needs USER), Debian's python3 has lark for ch-image."""
    binaries = ("ch-convert", "ch-run", "ch-image", "mksquashfs", "squashfuse", "pigz")
    return (all(shutil.which(binary, path="/usr/bin:/bin:/usr/sbin") for binary in binaries)
            and _quiet(["/usr/bin/python3", "-c", "import lark"])
            and _quiet(["env", "USER=root", "ch-run", "--version"]))


def start_charliecloud() -> None:
    """Install what is missing (python3-lark and pigz are not pulled in by the binaries' check)."""
    if not charliecloud_ready():
        apt_install(CHARLIECLOUD_PACKAGES, lambda _text: None)


CHARLIECLOUD = Service("charliecloud", CHARLIECLOUD_PACKAGES, ("ch-convert", "ch-run", "mksquashfs"),
                       charliecloud_ready, start_charliecloud, timeout=30.0)



# --------------------------------------------------------------------------------------------
# PostgreSQL on loopback: the database of several image-creation service replicas (ci/service)
# --------------------------------------------------------------------------------------------

POSTGRESQL_ROLE = "root"  # the tests and `inv service.*` run as root: peer authentication on the socket, no password


def _postgresql_clusters() -> list[tuple[str, str, str]]:
    """(version, name, status) of Debian's clusters (pg_lsclusters)."""
    try:
        result = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=10,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [(parts[0], parts[1], parts[3]) for parts in (line.split() for line in result.stdout.splitlines())
            if len(parts) >= 4]


def postgresql_ready() -> bool:
    """A cluster answers on its socket and lets our role in (`psql` as root, database postgres)."""
    return _quiet(["pg_isready", "-q"]) and _quiet(["psql", "-d", "postgres", "-Atqc", "SELECT 1"])


def start_postgresql() -> None:
    """Start Debian's cluster (making one if there is none), then a login role for root that may create databases."""
    clusters = _postgresql_clusters()
    if not clusters:
        version = next(iter(sorted(p.name for p in Path("/usr/lib/postgresql").iterdir())), "")
        if not version:
            raise CIError("postgresql is installed but has no server under /usr/lib/postgresql; reinstall it")
        subprocess.run(["pg_createcluster", version, "main"], capture_output=True, check=True)
        clusters = _postgresql_clusters()
    version, name, status = clusters[0]
    if status != "online":
        result = subprocess.run(["pg_ctlcluster", version, name, "start"], capture_output=True, text=True, check=False)
        if result.returncode != 0 and "already running" not in result.stderr:
            raise CIError(f"pg_ctlcluster {version} {name} start failed: {result.stderr.strip()}")
    wait_until(lambda: _quiet(["pg_isready", "-q"]), 30, "postgresql")
    exists = subprocess.run(["runuser", "-u", "postgres", "--", "psql", "-Atqc",
                             f"SELECT 1 FROM pg_roles WHERE rolname = '{POSTGRESQL_ROLE}'"],
                            capture_output=True, text=True, check=False).stdout.strip() == "1"
    if not exists:
        subprocess.run(["runuser", "-u", "postgres", "--", "createuser", "--createdb", POSTGRESQL_ROLE],
                       capture_output=True, check=True)


POSTGRESQL = Service("postgresql", ("postgresql",), ("pg_ctlcluster", "pg_isready", "psql"), postgresql_ready,
                     start_postgresql)


# --------------------------------------------------------------------------------------------
# Chromium: the headless browser that tests the service's web page (nothing to start)
# --------------------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def chromium_ready() -> bool:
    return Path(CHROMIUM).exists() and _quiet([CHROMIUM, "--headless", "--no-sandbox", "--version"], timeout=30)


def start_chromium() -> None:
    if not Path(CHROMIUM).exists():
        apt_install(("chromium",), lambda _text: None)


CHROMIUM_SERVICE = Service("chromium", ("chromium",), ("chromium",), chromium_ready, start_chromium, timeout=30.0)

# --------------------------------------------------------------------------------------------
# QEMU through binfmt_misc: arm64 images build (BuildKit --platform linux/arm64) and run here
# --------------------------------------------------------------------------------------------

BINFMT = Path("/proc/sys/fs/binfmt_misc")
QEMU_ARM64 = BINFMT / "qemu-aarch64"


def binfmt_ready() -> bool:
    """The kernel runs aarch64 programs through qemu: the handler is registered, enabled, and fixed
    (flag F: the interpreter is opened once, so it works inside containers that do not have it)."""
    try:
        text = QEMU_ARM64.read_text()
    except OSError:
        return False
    flags = next((line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags:")), "")
    return text.startswith("enabled") and "F" in flags


def start_binfmt() -> None:
    """Mount binfmt_misc (a container or a minimal VM may not have it), then enable Debian's handler."""
    if not (BINFMT / "register").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True, check=False)
    subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True, check=False)


QEMU = Service("qemu-user-static", ("qemu-user-static", "binfmt-support"), ("qemu-aarch64-static", "update-binfmts"),
               binfmt_ready, start_binfmt, timeout=15.0)

# --------------------------------------------------------------------------------------------
# A non-root job user with subordinate ids: what rootless Docker inside runner jobs needs (issue 22)
# --------------------------------------------------------------------------------------------

RUNNER_USER = "ci-runner"  # runner jobs of the tests run as this user (rootless Docker refuses root)
ROOTLESS_PACKAGES = ("rootlesskit", "slirp4netns", "uidmap", "busybox-static", "podman")
SUBID_COUNT = 65536
SUBID_FIRST = 100000
TUN = Path("/dev/net/tun")


def _subid_ranges(path: Path) -> list[tuple[str, int, int]]:
    """(owner, first, count) of each line of /etc/subuid or /etc/subgid (bad lines skipped)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    ranges = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            ranges.append((parts[0], int(parts[1]), int(parts[2])))
    return ranges


def _has_subids(user: str) -> bool:
    import pwd

    try:
        uid = str(pwd.getpwnam(user).pw_uid)
    except KeyError:
        return False
    return all(any(owner in (user, uid) and count >= SUBID_COUNT for owner, _, count in _subid_ranges(Path(path)))
               for path in ("/etc/subuid", "/etc/subgid"))


def rootless_ready() -> bool:
    """The job user exists with subordinate ids, the tools are installed, and it can make a user namespace."""
    binaries = ("rootlesskit", "slirp4netns", "newuidmap", "newgidmap", "busybox", "podman")
    return (all(shutil.which(binary, path="/usr/bin:/bin:/usr/sbin:/sbin") for binary in binaries)
            and _has_subids(RUNNER_USER)
            and (not loopback_key().with_suffix(".pub").exists() or _loopback_key_authorized(RUNNER_USER))
            and _quiet(["runuser", "-u", RUNNER_USER, "--", "unshare", "--user", "--map-root-user", "true"])
            and _quiet(["runuser", "-u", RUNNER_USER, "--", "test", "-r", str(TUN), "-a", "-w", str(TUN)]))


def _add_subids(user: str) -> None:
    """Append a free range of SUBID_COUNT ids for `user` to /etc/subuid and /etc/subgid (idempotent)."""
    for path in (Path("/etc/subuid"), Path("/etc/subgid")):
        ranges = _subid_ranges(path)
        if any(owner == user for owner, _, _ in ranges):
            continue
        first = max([SUBID_FIRST, *(start + count for _, start, count in ranges)])
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        if existing and not existing.endswith("\n"):
            existing += "\n"
        path.write_text(f"{existing}{user}:{first}:{SUBID_COUNT}\n", encoding="utf-8")
        path.chmod(0o644)


def _authorized_keys(user: str) -> Path:
    import pwd

    return Path(pwd.getpwnam(user).pw_dir) / ".ssh" / "authorized_keys"


def _loopback_key_authorized(user: str) -> bool:
    """The loopback sshd lets `user` in with the throw-away key (how tests submit jobs as that user)."""
    public = loopback_key().with_suffix(".pub")
    try:
        return public.read_text(encoding="utf-8").strip() in _authorized_keys(user).read_text(encoding="utf-8")
    except (OSError, KeyError):
        return False


def _authorize_loopback_key(user: str) -> None:
    """The loopback key in the user's own authorized_keys (sshd reads the shared file as that user,
    and the shared one is root's 0600)."""
    public = loopback_key().with_suffix(".pub")
    if not public.exists() or _loopback_key_authorized(user):
        return
    path = _authorized_keys(user)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    path.write_text(existing + public.read_text(encoding="utf-8").strip() + "\n", encoding="utf-8")
    path.chmod(0o600)
    for item in (path.parent, path):
        shutil.chown(item, user, user)


def start_rootless() -> None:
    """Install the rootless tools, create the job user (no password, so only root or a key gets in)."""
    if not all(shutil.which(binary) for binary in ("rootlesskit", "slirp4netns", "newuidmap", "busybox", "podman")):
        apt_install(ROOTLESS_PACKAGES, lambda _text: None)
    if subprocess.run(["id", "-u", RUNNER_USER], capture_output=True, check=False).returncode != 0:
        # useradd may write subordinate ids itself (login.defs SUB_UID_MIN); _add_subids keeps what it wrote.
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "--user-group", RUNNER_USER],
                       capture_output=True, check=True)
    # "*" (no password) instead of useradd's "!" (locked): sshd refuses locked accounts even with a key.
    subprocess.run(["usermod", "-p", "*", RUNNER_USER], capture_output=True, check=True)
    _add_subids(RUNNER_USER)
    _authorize_loopback_key(RUNNER_USER)
    if TUN.exists():  # slirp4netns opens it as the user; udev's rule makes it 0666, a VM without udev may not
        TUN.chmod(0o666)


ROOTLESS = Service("rootless", ROOTLESS_PACKAGES, ("rootlesskit", "slirp4netns", "newuidmap", "busybox", "podman"),
                   rootless_ready, start_rootless, timeout=15.0)


# --------------------------------------------------------------------------------------------
# An S3-compatible object store on 127.0.0.1:9000 (moto's standalone server, from PyPI): the
# `object-store` publish target and the Spack build cache use it; tests find it via CI_S3_ENDPOINT
# --------------------------------------------------------------------------------------------

S3_ENDPOINT_ENV = "CI_S3_ENDPOINT"
S3_DEFAULT_ENDPOINT = "http://127.0.0.1:9000"
S3_PORT = 9000


def s3_endpoint() -> str:
    """The loopback S3 server's URL: CI_S3_ENDPOINT, else http://127.0.0.1:9000 (what `inv local.up` starts)."""
    return os.environ.get(S3_ENDPOINT_ENV) or S3_DEFAULT_ENDPOINT


def _moto_server() -> str | None:
    """moto's server script beside this interpreter (the venv's bin/), else on PATH."""
    import sys

    beside = Path(sys.executable).parent / "moto_server"
    return str(beside) if beside.exists() else shutil.which("moto_server")


def s3_ready() -> bool:
    """The server answers S3's ListBuckets (an anonymous GET / is a 200 with an XML body on moto)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{S3_PORT}/", timeout=2) as response:
            return bool(response.status == 200 and b"ListAllMyBucketsResult" in response.read(4096))
    except (urllib.error.URLError, OSError):
        return False


def start_s3() -> None:
    """moto_server on loopback only; it is a Python package (`moto[server]` in the dev dependencies), not Debian's."""
    server = _moto_server()
    if server is None:
        raise CIError("moto_server is not installed; `pip install 'moto[server]'` (the project's dev dependencies)")
    _spawn([server, "-H", "127.0.0.1", "-p", str(S3_PORT)], "s3.log")


S3 = Service("s3", (), (), s3_ready, start_s3, timeout=60.0)

# In dependency order: `inv local.up` ensures each in turn.
ALL_SERVICES = (DOCKER, BUILD_ENGINES, SSHD, MUNGE, SLURM, REGISTRY, CHARLIECLOUD, POSTGRESQL, CHROMIUM_SERVICE,
                QEMU, ROOTLESS, S3)
