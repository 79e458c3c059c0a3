"""Serve the emulated cloud, to try `inv vm.*` by hand (see docs/standins.md, "The OpenStack emulator").

    python -m tests.cloud_emulator --write /tmp/cloud [--loopback] [--port 8780]

serves Keystone/Nova/Neutron/Cinder/Glance on 127.0.0.1 until Ctrl-C and writes, into the folder:
  clouds.yaml   a cloud named "emulated" (application credential; mode 0600)
  invoke.yaml   an Invoke config for `inv -f /tmp/cloud/invoke.yaml vm.start ...`: the build VM is
                this machine's sshd on 127.0.0.1:2222 (from `inv local.up`), its floating IP 127.0.0.1
With --loopback (root), a 1 GB file-backed loop device plays the volume, and prepare-vm mounts it
under the folder and points <folder>/var-lib-docker to it; this machine's Docker is never stopped
or moved (--docker-service none). Faults can be switched on while it runs:
    curl -X POST -d '{"server_error": true}' http://127.0.0.1:8780/_emulator/faults
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
from pathlib import Path

import yaml

from .emulator import Cloud, Emulator


def loopback_device(folder: Path) -> str:
    image = folder / "volume.img"
    if not image.exists():
        with image.open("wb") as handle:
            handle.truncate(1 << 30)
    result = subprocess.run(["losetup", "--find", "--show", str(image)], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        sys.exit(f"losetup failed ({result.stderr.strip()}); --loopback needs root and loop devices")
    return result.stdout.strip()


def release_loopback(folder: Path, device: str) -> None:
    with contextlib.suppress(OSError):
        subprocess.run(["umount", str(folder / "mnt")], capture_output=True, check=False)
        subprocess.run(["losetup", "-d", device], capture_output=True, check=False)


def invoke_config(emulator: Emulator, folder: Path, device: str | None) -> dict[str, object]:
    from ci.local import services as local

    vm: dict[str, object] = {
        "cloud": "emulated", "clouds_file": str(folder / "clouds.yaml"), "image": "Ubuntu-22.04",
        "flavor": "standard.small", "ssh_user": "root", "ssh_port": local.SSHD_PORT,
        "ssh_key": str(local.loopback_key()), "mount_point": str(folder / "mnt"), "volume_size": 1,
        "poll_interval": 0.5,
        "timeouts": {"active": 60, "ssh": 60, "volume": 30, "delete": 60, "prepare": 300},
        "prepare_args": ["--docker-dir", str(folder / "var-lib-docker"), "--docker-service", "none",
                         "--fstab", "none"],
    }
    if device:
        vm["device"] = device
    return {"ci": {"vm": vm}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cloud_emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=8780, help="port on 127.0.0.1 (default 8780; 0: any)")
    parser.add_argument("--floating-ip", default="127.0.0.1", help="address every floating IP gets")
    parser.add_argument("--write", type=Path, metavar="DIR", help="write clouds.yaml and invoke.yaml here")
    parser.add_argument("--loopback", action="store_true", help="a loop device plays the volume (root)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    args = parser.parse_args(argv)

    emulator = Emulator(Cloud(floating_ip_address=args.floating_ip, build_seconds=2, delete_seconds=1),
                        port=args.port, verbose=args.verbose)
    device = None
    if args.write:
        folder = args.write.resolve()
        folder.mkdir(parents=True, exist_ok=True)
        emulator.write_clouds_yaml(folder / "clouds.yaml")
        if args.loopback:
            device = loopback_device(folder)
        (folder / "invoke.yaml").write_text(yaml.safe_dump(invoke_config(emulator, folder, device),
                                                           sort_keys=False), encoding="utf-8")
        print(f"wrote {folder}/clouds.yaml and {folder}/invoke.yaml" + (f" (volume: {device})" if device else ""))
        print(f"try: inv -f {folder}/invoke.yaml vm.start && inv -f {folder}/invoke.yaml vm.prepare")
    print(f"emulated cloud on {emulator.url} (Keystone at {emulator.auth_url}); Ctrl-C stops it", flush=True)

    try:
        emulator.serve_until_signalled()
    finally:
        if device and args.write:
            release_loopback(args.write.resolve(), device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
