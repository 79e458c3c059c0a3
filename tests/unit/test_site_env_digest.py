"""The site-env image's digest and who uses it: content, not times; only the definitions that name it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ci.config.site_env import site_env_settings
from ci.definitions import load_catalog
from ci.errors import ConfigError
from ci.plan import make_plan
from ci.site.environment import content_digest, uses
from tests.support.definitions import definition


def tarball(path: Path, files: dict[str, bytes], *, mtime: int = 0, uid: int = 0, mode: int = 0o644) -> Path:
    with tarfile.open(path, "w") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.uid, info.mode = len(data), mtime, uid, mode
            archive.addfile(info, io.BytesIO(data))
    return path


def test_the_digest_follows_the_content_not_times_owners_or_order(tmp_path: Path) -> None:
    files = {"opt/cray/libfabric/lib64/libfabric.so.1": b"fabric 1.15", "usr/lib64/libcxi.so.1": b"cxi"}
    one = content_digest(tarball(tmp_path / "a.tar", files))
    assert content_digest(tarball(tmp_path / "b.tar", dict(reversed(files.items())), mtime=99, uid=7)) == one
    changed = {**files, "usr/lib64/libcxi.so.1": b"cxi 2"}
    assert content_digest(tarball(tmp_path / "c.tar", changed)) != one
    assert content_digest(tarball(tmp_path / "d.tar", files, mode=0o755)) != one


def test_which_definitions_use_the_image(tmp_path: Path) -> None:
    definition(tmp_path, "mpi", dockerfile="FROM base\nCOPY --from=site-env /opt/cray /opt/cray\n")
    definition(tmp_path, "quoted", dockerfile='FROM base\nCOPY --from="site-env:latest" /usr/lib64 /usr/lib64\n')
    definition(tmp_path, "other", dockerfile="FROM base\nCOPY --from=site-environment /x /x\n")
    definition(tmp_path, "base")
    catalog = load_catalog(tmp_path, ("amd64",))
    assert {spec.name for spec in catalog.images.values() if uses(spec, "site-env")} == {"mpi", "quoted"}

    def plan(digest: str) -> dict[str, str]:
        extra = [f"site-env:{digest}"]
        found = make_plan(catalog, extra_parents=lambda spec: extra if uses(spec, "site-env") else [])
        return {image.name: image.digest for image in found.images.values()}

    before, after = plan("1" * 64), plan("2" * 64)
    assert {name for name in before if before[name] != after[name]} == {"mpi", "quoted"}  # a site update
    assert plan("1" * 64) == before  # an unchanged site rebuilds nothing
    assert make_plan(catalog).images.keys() == make_plan(catalog, extra_parents=lambda _: []).images.keys()


def test_settings_are_checked() -> None:
    assert site_env_settings({}).enabled is False
    options = site_env_settings({"paths": ["/opt/cray/libfabric/", "/usr/lib64/libcxi.so.1"]})
    assert options.paths == ["/opt/cray/libfabric", "/usr/lib64/libcxi.so.1"] and options.image == "site-env"
    for bad in ({"paths": ["opt/cray"]}, {"paths": ["/opt/../etc"]}, {"paths": ["/"]}, {"image": "Site Env"},
                {"root": "relative"}, {"colour": 1}, {"paths": ["/opt/\x1b[31m"]}):
        with pytest.raises(ConfigError, match=r"ci\.site_env"):
            site_env_settings(bad)
