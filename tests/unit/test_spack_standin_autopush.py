"""The stand-in Spack at its command line, as the generated Dockerfile calls it, with a folder build cache:
a mirror added `--autopush` receives each package as soon as it is installed, so an install that fails
at its last package leaves every earlier one in the cache, and the next install builds only that one.
The cache is read back with the janitor's own reader (ci.spack.buildcache), not the stand-in's.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ci.buildcache import caches as buildcache
from ci.local.spack_standin import spack_standin


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def spack(state: Path, env: Path, *args: str) -> Result:
    """One `spack` command in-process (the stand-in's main, as its executable runs it), in `env`."""
    out, err = io.StringIO(), io.StringIO()
    here = Path.cwd()
    original = spack_standin.STATE
    spack_standin.STATE = state
    try:
        os.chdir(env)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = spack_standin.main(list(args))
            except SystemExit as exc:  # the stand-in ends errors with sys.exit(message), as a CLI does
                code = exc.code if isinstance(exc.code, int) else 1
                if isinstance(exc.code, str):
                    err.write(exc.code)
    finally:
        os.chdir(here)
        spack_standin.STATE = original
    return Result(code, out.getvalue(), err.getvalue())


def write_env(env: Path, tree: Path, last: str) -> None:
    env.mkdir(parents=True, exist_ok=True)
    (env / "spack.yaml").write_text("spack:\n  view: false\n  config:\n    install_tree:\n"
                                    f"      root: {tree}\n  specs:\n    - alpha@1.0\n    - beta@2.0\n"
                                    f"    - {last}\n")


def counts(output: str) -> tuple[int, int, int]:
    found = re.search(r"(\d+) from source, (\d+) from binary cache, \d+ already installed, (\d+) failed", output)
    assert found, output
    return int(found.group(1)), int(found.group(2)), int(found.group(3))


@pytest.fixture(autouse=True)
def _no_signing_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPACK_GNUPGHOME", str(tmp_path / "gnupg"))  # an empty keyring, whatever the machine has


def test_a_failed_install_keeps_every_finished_package_in_a_folder_cache(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first_state, second_state = tmp_path / "state1", tmp_path / "state2"  # two builds: two fresh builders
    env = tmp_path / "env"
    write_env(env, tmp_path / "tree1", "omega@3.0+fail")
    assert spack(first_state, env, "mirror", "add", "--scope", "site", "--autopush", "--unsigned", "cache",
                 str(cache)).returncode == 0
    assert spack(first_state, env, "-e", ".", "concretize").returncode == 0
    failed = spack(first_state, env, "-e", ".", "install", "--fail-fast")
    assert failed.returncode == 1 and "omega-3.0-" in failed.stderr
    assert counts(failed.stdout) == (3, 0, 1)
    assert sorted(entry.name for entry in buildcache.open_store(str(cache)).entries()) == [
        "alpha", "beta", "standin-runtime"]
    # a mirror without --autopush receives nothing: the push is the mirror's setting, not the install's
    plain = tmp_path / "plain"
    assert spack(first_state, env, "mirror", "add", "plain", str(plain)).returncode == 0
    assert spack(first_state, env, "-e", ".", "install").returncode == 1
    assert not plain.exists()

    write_env(env, tmp_path / "tree2", "omega@3.0")  # the fix: only the last package changes
    assert spack(second_state, env, "mirror", "add", "--autopush", "--unsigned", "cache", str(cache)).returncode == 0
    assert spack(second_state, env, "-e", ".", "concretize").returncode == 0
    fixed = spack(second_state, env, "-e", ".", "install", "--fail-fast")
    assert fixed.returncode == 0, fixed.stderr
    assert counts(fixed.stdout) == (1, 3, 0)
    assert "omega" in {entry.name for entry in buildcache.open_store(str(cache)).entries()}
    assert spack(second_state, env, "buildcache", "update-index", "cache").returncode == 0
    assert (cache / "v3" / "manifests" / "index" / "index.manifest.json").is_file()


def test_a_signed_autopush_mirror_without_a_key_stops(tmp_path: Path) -> None:
    env = tmp_path / "env"
    write_env(env, tmp_path / "tree", "omega@3.0")
    state = tmp_path / "state"
    cache = str(tmp_path / "cache")
    assert spack(state, env, "mirror", "add", "--autopush", "--signed", "cache", cache).returncode == 0
    assert spack(state, env, "-e", ".", "concretize").returncode == 0
    result = spack(state, env, "-e", ".", "install", "--fail-fast")
    assert result.returncode != 0 and "no signing key" in result.stderr
