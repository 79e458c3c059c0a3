"""SSH host keys are checked against known_hosts (the loopback sshd on 127.0.0.1:2222 plays the site):
an unknown key is refused with the fix, trust on first use records it, a changed key is refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ci.config.settings import SSHSettings, load_settings
from ci.hosts import HostKeyError, SSHHost
from ci.local import services as local

pytestmark = pytest.mark.ssh


def settings_for(loopback: SSHSettings, known_hosts: Path, **more: object) -> SSHSettings:
    return loopback.model_copy(update={"known_hosts": str(known_hosts), **more})


def answer(settings: SSHSettings) -> str:
    host = SSHHost(settings)
    try:
        return host.run(["echo", "reached"]).stdout.strip()
    finally:
        host.close()


def loopback_host_key() -> list[str]:
    return (local.SSHD_DIR / "ssh_host_ed25519_key.pub").read_text(encoding="utf-8").split()[:2]


def test_an_unknown_host_key_is_refused_with_its_fingerprint_and_the_fix(loopback_ssh: SSHSettings,
                                                                          tmp_path: Path) -> None:
    known_hosts = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError) as caught:
        answer(settings_for(loopback_ssh, known_hosts))
    message = str(caught.value)
    assert message.startswith("the SSH host key of [127.0.0.1]:2222 (ssh-ed25519 SHA256:")
    assert f"is not in {known_hosts} (the file does not exist)" in message
    assert f"ssh-keyscan -p 2222 127.0.0.1 >> {known_hosts}" in message and "ci.site.trust_on_first_use" in message
    assert not known_hosts.exists()  # strict: nothing recorded
    fingerprint = subprocess.run(["ssh-keygen", "-lf", str(local.SSHD_DIR / "ssh_host_ed25519_key.pub")],
                                 capture_output=True, text=True, check=True).stdout.split()[1]
    assert fingerprint in message  # the same fingerprint ssh-keygen shows, to compare with the site's


def test_trust_on_first_use_records_the_key_and_then_it_is_checked(loopback_ssh: SSHSettings,
                                                                    tmp_path: Path) -> None:
    known_hosts = tmp_path / "private" / "known_hosts"
    assert answer(settings_for(loopback_ssh, known_hosts, trust_on_first_use=True)) == "reached"
    assert (known_hosts.stat().st_mode & 0o777) == 0o600 and (known_hosts.parent.stat().st_mode & 0o777) == 0o700
    line = known_hosts.read_text(encoding="utf-8").split()
    assert line == ["[127.0.0.1]:2222", *loopback_host_key()]
    assert answer(settings_for(loopback_ssh, known_hosts)) == "reached"  # strict now passes on the record
    assert answer(settings_for(loopback_ssh, known_hosts, trust_on_first_use=True)) == "reached"
    assert len(known_hosts.read_text(encoding="utf-8").splitlines()) == 1  # a known key is not recorded twice
    # OpenSSH reads what was recorded: the same file makes the system ssh trust the host too
    ssh = subprocess.run(["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                          "-o", f"UserKnownHostsFile={known_hosts}", "-i", str(loopback_ssh.key_filename),
                          "-p", "2222", "root@127.0.0.1", "true"], capture_output=True, text=True, timeout=60)
    assert ssh.returncode == 0, ssh.stderr


def test_a_changed_host_key_is_refused_even_with_trust_on_first_use(loopback_ssh: SSHSettings,
                                                                     tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[127.0.0.1]:2222 " + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    before = known_hosts.read_text()
    for trust in (False, True):
        with pytest.raises(HostKeyError) as caught:
            answer(settings_for(loopback_ssh, known_hosts, trust_on_first_use=trust))
        message = str(caught.value)
        assert message.startswith("the SSH host key of [127.0.0.1]:2222 has changed: the server offered ssh-ed25519 "
                                  "SHA256:")
        assert "someone may be intercepting the connection" in message
        assert f"ssh-keygen -R '[127.0.0.1]:2222' -f {known_hosts}" in message
    assert known_hosts.read_text() == before  # the old key is never replaced silently


def test_a_pinned_address_is_checked_under_the_host_name(loopback_ssh: SSHSettings, tmp_path: Path) -> None:
    """A run pins one address of a round-robin name; known_hosts holds the key under the name."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("[login.example.org]:2222 " + " ".join(loopback_host_key()) + "\n")
    assert answer(settings_for(loopback_ssh, known_hosts, host_key_alias="login.example.org")) == "reached"
    with pytest.raises(HostKeyError, match=r"host key of \[127\.0\.0\.1\]:2222 .* is not in"):
        answer(settings_for(loopback_ssh, known_hosts))


def test_site_settings_carry_known_hosts_and_trust_to_the_connection(loopback_ssh: SSHSettings,
                                                                      tmp_path: Path) -> None:
    site = {"root": str(tmp_path / "site"), "known_hosts": str(tmp_path / "kh"),
            "ssh": {"host": "127.0.0.1", "port": 2222, "user": "root", "key_filename": loopback_ssh.key_filename}}
    strict = load_settings({"site": site}, tmp_path).site.ssh
    assert strict is not None and not strict.trust_on_first_use
    with pytest.raises(HostKeyError):
        answer(strict)
    trusting = load_settings({"site": {**site, "trust_on_first_use": True}}, tmp_path).site.ssh
    assert trusting is not None and answer(trusting) == "reached"
    assert (tmp_path / "kh").read_text().split()[1:] == loopback_host_key()
