"""Unpack a `docker save` archive into one root folder, as Docker would see the image's file system.

Charliecloud's `ch-convert` reads flat tarballs and Docker's own storage, but not the layered
archive the transfer step ships, and HPC login nodes have no Docker engine to load it into.
This script is that missing step. It runs on the site host with whatever `python3` is there, so
it uses the standard library only and is copied next to the archive before it runs:

    python3 flatten.py IMAGE.tar ROOTDIR

Layers are applied in order with the OCI whiteout rules (`.wh.NAME` deletes NAME from lower
layers, `.wh..wh..opq` empties its folder), device files are skipped (unprivileged users cannot
create them and every engine mounts its own /dev), no entry may write outside ROOTDIR (through
`..` or a symbolic link), and the result gets what `ch-convert` gives a folder image: the image's
environment in ch/environment, the mount points ch-run needs, and owner-writable folders.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import sys
import tarfile
from typing import IO, Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
MOUNT_DIRS = ("bin", "dev", "etc", "mnt", "proc", "usr", *(f"mnt/{i}" for i in range(10)))
MOUNT_FILES = ("etc/hosts", "etc/resolv.conf")


class FlattenError(Exception):
    pass


def _clean(name: str) -> str:
    """An archive member name as a path relative to the root (`./a//b` -> `a/b`); refuses `..`."""
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FlattenError(f"refusing member with '..' in its path: {name}")
    return "/".join(parts)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _resolve_parent(root: str, relative: str) -> str:
    """The real folder that `relative`'s parent names, following links as the container would."""
    current = root
    parts = [p for p in posixpath.dirname(relative).split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        candidate = os.path.join(current, part)
        if os.path.islink(candidate):
            hops += 1
            if hops > 40:
                raise FlattenError(f"too many levels of symbolic links under {relative}")
            target = os.readlink(candidate)
            if target.startswith("/"):  # absolute links are relative to the image's root, not ours
                resolved = posixpath.normpath(posixpath.join(root, target.lstrip("/")))
            else:
                resolved = posixpath.normpath(posixpath.join(current, target))
            if not _inside(root, resolved):
                raise FlattenError(f"a symbolic link leads {relative} outside the image")
            current = root
            parts = [p for p in os.path.relpath(resolved, root).split("/") if p not in ("", ".")] + parts
            continue
        if not os.path.exists(candidate):
            os.makedirs(candidate, mode=0o755)
        elif not os.path.isdir(candidate):
            os.unlink(candidate)
            os.makedirs(candidate, mode=0o755)
        current = candidate
    return current


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def _apply_whiteouts(root: str, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        relative = _clean(member.name)
        base = posixpath.basename(relative)
        if not base.startswith(WHITEOUT):
            continue
        folder = _resolve_parent(root, relative)
        if base == OPAQUE:
            for child in os.listdir(folder):
                _remove(os.path.join(folder, child))
        else:
            _remove(os.path.join(folder, base[len(WHITEOUT):]))


def _copy(source: IO[bytes], path: str, mode: int) -> None:
    with open(path, "xb") as handle:
        shutil.copyfileobj(source, handle, 1 << 20)
    os.chmod(path, mode)


def _extract(root: str, layer: tarfile.TarFile, members: list[tarfile.TarInfo]) -> None:
    for member in members:
        relative = _clean(member.name)
        if not relative or posixpath.basename(relative).startswith(WHITEOUT):
            continue
        if member.ischr() or member.isblk() or member.isfifo():
            continue
        path = os.path.join(_resolve_parent(root, relative), posixpath.basename(relative))
        mode = stat.S_IMODE(member.mode)
        if member.isdir():
            if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
                _remove(path)
            os.makedirs(path, exist_ok=True)
            os.chmod(path, mode | stat.S_IRWXU)
            continue
        _remove(path)
        if member.issym():
            os.symlink(member.linkname, path)
        elif member.islnk():
            target_relative = _clean(member.linkname)
            target = os.path.join(_resolve_parent(root, target_relative), posixpath.basename(target_relative))
            if not os.path.isfile(target):
                raise FlattenError(f"hard link {member.name} points at missing {member.linkname}")
            os.link(target, path)
        elif member.isfile():
            source = layer.extractfile(member)
            if source is None:
                raise FlattenError(f"cannot read {member.name}")
            _copy(source, path, mode | stat.S_IRUSR | stat.S_IWUSR)
        else:
            continue
        if not member.issym():
            os.utime(path, (member.mtime, member.mtime))


def _read_json(archive: tarfile.TarFile, name: str) -> Any:
    handle = archive.extractfile(name)
    if handle is None:
        raise FlattenError(f"{name} is missing from the archive")
    return json.load(handle)


def flatten(archive_path: str, root: str) -> None:
    root = os.path.abspath(root)
    if os.path.lexists(root):
        shutil.rmtree(root)
    os.makedirs(root)
    with tarfile.open(archive_path, "r:*") as archive:
        try:
            manifest = _read_json(archive, "manifest.json")
        except KeyError:
            raise FlattenError(f"{archive_path} has no manifest.json; is it a `docker save` archive?") from None
        if not manifest:
            raise FlattenError(f"{archive_path}: manifest.json lists no image")
        entry = manifest[0]
        config = _read_json(archive, entry["Config"])
        for layer_name in entry["Layers"]:
            handle = archive.extractfile(layer_name)
            if handle is None:
                raise FlattenError(f"layer {layer_name} is missing from {archive_path}")
            with tarfile.open(fileobj=handle, mode="r:*") as layer:
                members = layer.getmembers()
                _apply_whiteouts(root, members)
                _extract(root, layer, members)
    environment = (config.get("config") or {}).get("Env") or []
    os.makedirs(os.path.join(root, "ch"), exist_ok=True)
    with open(os.path.join(root, "ch", "environment"), "w", encoding="utf-8") as env_file:
        env_file.writelines(f"{line}\n" for line in environment)
    for folder in MOUNT_DIRS:
        if not os.path.lexists(os.path.join(root, folder)):
            os.makedirs(os.path.join(root, folder), mode=0o755)
    for name in MOUNT_FILES:
        if not os.path.lexists(os.path.join(root, name)):
            open(os.path.join(root, name), "a").close()
    for current, folders, _ in os.walk(root):
        for folder in folders:
            path = os.path.join(current, folder)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) | stat.S_IRWXU)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: flatten.py IMAGE.tar ROOTDIR", file=sys.stderr)
        return 2
    try:
        flatten(argv[1], argv[2])
    except (FlattenError, OSError, tarfile.TarError, KeyError, ValueError) as exc:
        print(f"flatten: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
