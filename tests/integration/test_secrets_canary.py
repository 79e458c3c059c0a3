"""No secret value reaches a command line, a log, a report or the site: the pipeline runs with
canary secrets, and everything it could leak into is searched for them.

- CI_REGISTRY_TOKEN (with CI_REGISTRY_USER): a second registry, with htpasswd auth, on a free
  loopback port. It refuses anonymous requests, so a run that pushes and converts through it has
  logged in for real (`docker login --password-stdin`, the login kept in a DOCKER_CONFIG folder of
  the test, which is docker's credential store and not searched).
- CI_SSH_KEY_PASSPHRASE: a fresh ed25519 key encrypted with the canary, authorised in the loopback
  sshd for the test only, and the only key offered (no agent, no default keys): the SSH site cannot
  be reached without the passphrase.

Searched: argv of every child of this process (subprocess.Popen), /proc/*/cmdline of every process
of the machine sampled every 20 ms (which covers the commands sshd runs for the "login node"), every
command line fabric sends, captured stdout/stderr, the run's progress, and every file under the
state dir (events, logs, reports), the site root and the registry's folder, plus Slurm's saved
environment of the run's jobs. Each image has a test that prints its whole environment, so a
secret that reached the jobs would show up in their logs and in the reports.
"""

from __future__ import annotations

import re
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.config.settings import SSHSettings
from ci.errors import SiteError
from ci.hosts import SSHHost
from ci.local import services as local
from tests.cloud_emulator.testing import Witness, assert_nowhere
from tests.support.services import REGISTRY, free_port, require
from tests.support.site_helpers import Check, SiteProject, failing, isolated_project, promoted, step_data, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

USER = f"canary-user-{uuid.uuid4().hex[:8]}"
TOKEN = f"canary-token-{uuid.uuid4().hex}"
PASSPHRASE = f"canary-passphrase-{uuid.uuid4().hex}"
SECRETS = {"CI_REGISTRY_TOKEN": TOKEN, "CI_SSH_KEY_PASSPHRASE": PASSPHRASE}

PRINTENV = Check("printenv", 'env | sort\necho "env printed"\n', {"patterns": ["env printed"]})


def anonymous_status(address: str) -> int:
    try:
        with urllib.request.urlopen(f"http://{address}/v2/", timeout=2) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """Debian's docker-registry with htpasswd auth (bcrypt of the canary token) on a free port."""
    require(subprocess.run(["sh", "-c", "command -v docker-registry"], capture_output=True).returncode == 0,
            "docker-registry")
    bcrypt = pytest.importorskip("bcrypt")
    folder = tmp_path_factory.mktemp("auth-registry")
    (folder / "htpasswd").write_text(f"{USER}:{bcrypt.hashpw(TOKEN.encode(), bcrypt.gensalt(5)).decode()}\n")
    address = f"127.0.0.1:{free_port()}"
    (folder / "config.yml").write_text(
        "version: 0.1\nlog: {level: info}\n"
        f"storage: {{filesystem: {{rootdirectory: {folder / 'data'}}}, delete: {{enabled: true}}}}\n"
        f"http: {{addr: '{address}'}}\n"
        f"auth: {{htpasswd: {{realm: containers-ci-canary, path: {folder / 'htpasswd'}}}}}\n")
    with (folder / "registry.log").open("w") as log:
        server = subprocess.Popen(["docker-registry", "serve", str(folder / "config.yml")], stdout=log, stderr=log)
    try:
        wait_for(lambda: anonymous_status(address) == 401, 30, f"the registry with auth on {address}")
        yield address, folder
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.fixture
def docker_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """docker login writes to a folder of the test, never to ~/.docker/config.json."""
    folder = tmp_path / "docker-config"
    folder.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    return folder


@pytest.fixture
def site_project(tmp_path: Path) -> Iterator[SiteProject]:
    yield from isolated_project(tmp_path / "project")


class FabricLines:
    """Every command line (and inline env) fabric sends to the SSH site."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        import fabric

        self.lines: list[str] = []
        original = fabric.Connection.run

        def run(connection: Any, command: str, **kwargs: Any) -> Any:
            self.lines.append(f"{command} {kwargs.get('env') or ''}")
            return original(connection, command, **kwargs)

        monkeypatch.setattr(fabric.Connection, "run", run)


def slurm_saved_environments(job_ids: list[str]) -> dict[str, str]:
    """What slurmctld keeps of each job's environment (while the job is in its memory)."""
    spool = Path("/var/spool/slurmctld")
    found = {}
    for job_id in job_ids:
        for path in spool.glob(f"hash.*/job.{job_id}/environment"):
            found[str(path)] = path.read_bytes().decode(errors="replace")
    return found


def arm_canaries(project: SiteProject, monkeypatch: pytest.MonkeyPatch) -> Witness:
    """Two images whose tests print their environment, the secrets set, and argv being watched."""
    project.add("envy", [PRINTENV])
    project.add("sour", [PRINTENV, failing()])
    monkeypatch.setenv("CI_REGISTRY_USER", USER)
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return Witness(monkeypatch)


def assert_no_canary(witness: Witness, project: SiteProject, texts: dict[str, str], roots: list[Path]) -> None:
    job_ids = [job_id for job_id, _, _ in project.jobs()]
    texts = {**texts, "progress": project.console_output.getvalue(), **slurm_saved_environments(job_ids)}
    for secret in SECRETS.values():
        assert_nowhere(secret, witness, texts, [project.state_dir, Path(project.site_root), *roots])


def assert_env_was_printed(project: SiteProject, name: str) -> str:
    """The test job printed its environment: the check above is not vacuous."""
    report = project.reports[-1]
    (test,) = [t for t in step_data(report, name, "test")["tests"] if t["name"] == "printenv"]
    log = (project.run_folder(report.run_id) / "logs" / "amd64" / f"{name}.test-printenv.log").read_text()
    assert test["passed"] and "CI_TEST=printenv" in log, log
    return log


# ------------------------------------------------------------------------------------------------
# local site, registry with auth
# ------------------------------------------------------------------------------------------------


def test_no_secret_leaks_from_a_run_on_the_local_site(site_project: SiteProject, auth_registry: tuple[str, Path],
                                                      docker_config: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capfd: pytest.CaptureFixture[str]) -> None:
    address, registry_folder = auth_registry
    assert anonymous_status(address) == 401, "the registry must demand credentials"
    project = site_project
    project.registries.add(address)
    witness = arm_canaries(project, monkeypatch)
    report = project.run(project.settings(registry={"address": address, "insecure": True}))
    out, err = capfd.readouterr()

    assert {image.name: image.state for image in report.images} == {"envy": "done", "sour": "failed"}, \
        project.console_output.getvalue()
    assert set(promoted(project.site_root, "tested")) == {"envy"}
    assert step_data(report, "envy", "transfer")["reference"].startswith(f"{address}/envy:")
    logins = [argv for argv in witness.argv if " login " in argv and argv.split()[0].endswith("docker")]
    build_side = [argv for argv in logins if re.fullmatch(
        rf"/usr/bin/docker --config (\S+/ci-docker-config-\w+) login --password-stdin --username {USER} {address}",
        argv)]
    assert len(build_side) == 1, f"one login of the build side, into a private Docker config folder: {logins}"
    # the site's conversion pulls with docker too (a plain-http registry): its own login, in its own folder
    assert all(argv.endswith(f"login --username {USER} --password-stdin {address}") for argv in logins
               if argv not in build_side), logins
    private = Path(build_side[0].split()[2])
    assert not private.exists(), "the run's Docker config folder (and the token in it) is gone after the run"
    assert not (docker_config / "config.json").exists(), "the user's Docker config never holds the run's login"
    printed = assert_env_was_printed(project, "envy")
    assert "DOCKER_CONFIG=" in printed, "the jobs inherit the environment; only the secrets are kept out"
    assert_no_canary(witness, project, {"stdout": out, "stderr": err}, [registry_folder])


# ------------------------------------------------------------------------------------------------
# SSH site, key with a passphrase, registry through the tunnel
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def passphrase_key(tmp_path: Path, loopback_ssh: SSHSettings) -> Iterator[Path]:
    """A new ed25519 key encrypted with the canary passphrase (in-process: no ssh-keygen argv),
    authorised in the loopback sshd for this test only."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    path = tmp_path / "keys" / "site-key"
    path.parent.mkdir()
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                       serialization.BestAvailableEncryption(PASSPHRASE.encode())))
    path.chmod(0o600)
    line = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    entry = f"{line.decode()} containers-ci-canary-{uuid.uuid4().hex[:8]}\n"
    authorized = local.SSHD_DIR / "authorized_keys"
    with authorized.open("a", encoding="utf-8") as handle:
        handle.write(entry)
    try:
        yield path
    finally:
        kept = [text for text in authorized.read_text(encoding="utf-8").splitlines(keepends=True) if text != entry]
        authorized.write_text("".join(kept), encoding="utf-8")


@pytest.mark.ssh
@pytest.mark.usefixtures("docker_config")
def test_no_secret_leaks_from_a_run_on_an_ssh_site(site_project: SiteProject, passphrase_key: Path,
                                                   loopback_ssh: SSHSettings, monkeypatch: pytest.MonkeyPatch,
                                                   capfd: pytest.CaptureFixture[str]) -> None:
    project = site_project
    ssh = {"host": loopback_ssh.host, "port": loopback_ssh.port, "user": loopback_ssh.user,
           "key_filename": str(passphrase_key), "extra": {"look_for_keys": False, "allow_agent": False},
           "known_hosts": loopback_ssh.known_hosts}
    port = free_port()
    settings = project.settings(ssh=ssh, registry={"address": REGISTRY, "tunnel": True, "local_port": port})
    assert settings.site.ssh is not None
    monkeypatch.delenv("CI_SSH_KEY_PASSPHRASE", raising=False)
    without = SSHHost(settings.site.ssh)
    try:
        with pytest.raises(SiteError, match="cannot run commands"):
            without.run(["true"])
    finally:
        without.close()

    witness = arm_canaries(project, monkeypatch)
    fabric = FabricLines(monkeypatch)
    report = project.run(settings)
    out, err = capfd.readouterr()

    assert {image.name: image.state for image in report.images} == {"envy": "done", "sour": "failed"}, \
        project.console_output.getvalue()
    assert set(promoted(project.site_root, "tested")) == {"envy"}
    assert f"site root@127.0.0.1:{project.site_root}" in project.console_output.getvalue()
    assert any(" sbatch " in line or line.startswith("sbatch ") for line in fabric.lines), "jobs went over SSH"
    logins = [argv for argv in witness.argv if " login " in argv and argv.split()[0].endswith("docker")]
    assert len(logins) == 1 and re.fullmatch(rf"/usr/bin/docker --config \S+/ci-docker-config-\w+ login "
                                             rf"--password-stdin --username {USER} 127\.0\.0\.1:{port}", logins[0])
    assert not Path(logins[0].split()[2]).exists(), "the run's Docker config folder is gone after the run"
    assert_env_was_printed(project, "envy")
    assert_no_canary(witness, project, {"stdout": out, "stderr": err, "fabric": "\n".join(fabric.lines)}, [])
