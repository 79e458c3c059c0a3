"""Helpers for the build VM's tests: settings whose `ci.vm` points at an emulated cloud."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from ci.config.settings import Settings, deep_merge, load_settings
from tests.support.config import project_config
from tests.support.paths import PROJECT_DIR

from .emulator import Emulator


def ssh_keypair(folder: Path, passphrase: str = "") -> Path:
    """A fresh ed25519 key pair; the passphrase goes through ssh-keygen's argv, so tests only."""
    key = folder / "id_ed25519"
    if key.exists():
        return key
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "test", "-f", str(key)],
                   check=True)
    return key


def vm_settings(emulator: Emulator, tmp_path: Path, *, vm: Mapping[str, Any] | None = None,
                profile: str = "local", ssh_key: Path | None = None, **top: Any) -> Settings:
    """Settings with ci.vm aimed at `emulator` (clouds.yaml written 0600 under tmp_path)."""
    clouds = emulator.write_clouds_yaml(tmp_path / "secrets" / "clouds.yaml")
    key = ssh_key or ssh_keypair(tmp_path)
    section = {
        "cloud": "emulated", "clouds_file": str(clouds), "image": "Ubuntu-22.04", "flavor": "standard.small",
        "ssh_key": str(key), "poll_interval": 0.05, "volume_size": 1,
        "timeouts": {"active": 5, "ssh": 5, "volume": 5, "delete": 5, "prepare": 60},
    }
    raw = deep_merge(project_config(), {"state_dir": str(tmp_path / "state"), "vm": section, **top})
    raw = deep_merge(raw, {"vm": dict(vm or {})})
    return load_settings(raw, PROJECT_DIR, profile=profile)


@contextmanager
def loop_device(folder: Path, size: int = 300 << 20) -> Iterator[str]:
    """A file-backed block device (root and loop devices needed), released afterwards."""
    image = folder / "volume.img"
    with image.open("wb") as handle:
        handle.truncate(size)
    result = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise OSError(f"losetup: {result.stderr.strip()}")
    device = result.stdout.strip()
    try:
        yield device
    finally:
        mounts = subprocess.run(["findmnt", "-n", "-o", "TARGET", "--source", device], capture_output=True,
                                text=True, check=False).stdout.split()
        for target in mounts:
            subprocess.run(["umount", target], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


class Witness:
    """Everything a secret could leak into: argv of our children and of every process on the machine."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.argv: list[str] = []
        self.cmdlines: set[str] = set()
        self._stop = threading.Event()
        original = subprocess.Popen.__init__
        witness = self

        def recording_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
            witness.argv.append(" ".join(map(str, args)) if isinstance(args, list | tuple) else str(args))
            original(self, args, *rest, **kwargs)

        monkeypatch.setattr(subprocess.Popen, "__init__", recording_init)
        self._thread = threading.Thread(target=self._scan, daemon=True)
        self._thread.start()

    def _scan(self) -> None:
        while not self._stop.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                            self.cmdlines.add(handle.read().replace(b"\0", b" ").decode(errors="replace"))
                    except OSError:
                        continue
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def files_under(*roots: Path) -> Iterator[tuple[Path, bytes]]:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_socket():
                yield path, path.read_bytes()


def assert_nowhere(secret: str, witness: Witness, texts: dict[str, str], roots: list[Path]) -> None:
    witness.stop()
    assert witness.argv, "the witness saw no process at all"
    assert not [a for a in witness.argv if secret in a], "a secret reached a command line"
    assert not [c for c in witness.cmdlines if secret in c], "a secret showed up in /proc/*/cmdline"
    for name, text in texts.items():
        assert secret not in text, f"a secret reached {name}"
    for path, data in files_under(*roots):
        assert secret.encode() not in data, f"a secret reached {path}"
