"""Fixtures of eFlows4HPC's shapes, written by the tests themselves (never the fetched upstream repos).

`make_registry` makes a real git repository laid out as eFlows4HPC's workflow registry: branch `main`
and branch `v2` (which changes one step), steps with apt only, pip only, requirements.txt, spack
only, all three plus post_inst.sh, and a step that has only spack.yaml (the older format).
`make_catalog` makes a software catalog repository with one custom Spack package and a cfg/ folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

# eFlows4HPC's client.py authenticates with HTTPBasicAuth(session_token, None): requests warns about
# the None password on every call; the clients we serve do it, so the tests that reproduce it do too
UPSTREAM_CLIENT_AUTH = pytest.mark.filterwarnings("ignore:Non-string passwords:DeprecationWarning")

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org", "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}

STEPS: dict[str, dict[str, Any]] = {
    "demo/apt_only": {"eflows4hpc.yaml": {"apt": ["jq", "less"]}},
    "demo/pip_only": {"eflows4hpc.yaml": {"pip": ["six==1.16.0", "idna>=3"]}},
    "demo/requirements": {"eflows4hpc.yaml": {"spack": {"specs": ["zlib@1.3"]}},
                          "requirements.txt": "# pinned\nsix==1.16.0\n\nattrs>=23  # comment\n"},
    "demo/spack_only": {"eflows4hpc.yaml": {"spack": {"specs": ["hello@2.12", "proj@7.2.0 curl=False tiff=False",
                                                                 "gromacs@2022.3~mpi^fftw~mpi"],
                                                       "packages": {"all": {"compiler": ["gcc@12"]}}}}},
    "demo/all_three": {"eflows4hpc.yaml": {"apt": ["jq", "python3-pip"],
                                           "spack": {"specs": ["hello@2.12", "mypkg@1.0"]}, "pip": ["six==1.16.0"]},
                       "post_inst.sh": "#!/bin/sh\necho post-install ran > /post_inst.done\n",
                       "src/data.txt": "payload\n"},
    "legacy/spack_file": {"spack.yaml": {"spack": {"specs": ["hello@2.12"]}}},
}


def git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                            env={**os.environ, **GIT_ENV})
    return result.stdout.strip()


def write_files(root: Path, files: dict[str, Any]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        if name.endswith(".sh"):
            path.chmod(0o755)


def make_registry(root: Path) -> Path:
    """A git work tree at `root` with branches main, v2 and release/2.0 (v2 again), and a tag 1.0 on main."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    for step, files in STEPS.items():
        write_files(root / step, files)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "registry")
    git(root, "tag", "1.0")
    git(root, "checkout", "-qb", "v2")
    changed = {"apt": ["jq", "python3-pip"], "spack": {"specs": ["hello@2.13"]}, "pip": ["six==1.16.0"]}
    write_files(root / "demo/all_three", {"eflows4hpc.yaml": changed})
    git(root, "commit", "-qam", "v2: hello 2.13")
    git(root, "branch", "release/2.0")  # a branch name with a '/', as release branches often have
    git(root, "checkout", "-q", "main")
    return root


def commit_change(root: Path, step: str, files: dict[str, Any], branch: str = "main") -> str:
    git(root, "checkout", "-q", branch)
    write_files(root / step, files)
    git(root, "add", "-A")
    git(root, "commit", "-qm", f"change {step}")
    return git(root, "rev-parse", "HEAD")


def make_catalog(root: Path) -> Path:
    """A software catalog: repo.yaml, packages/mypkg/package.py, cfg/packages.yaml and cfg/repos.yaml."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    write_files(root, {
        "repo.yaml": {"repo": {"namespace": "demo_catalog"}},
        "packages/mypkg/package.py": "from spack.package import *\n\n\nclass Mypkg(Package):\n"
                                     "    \"\"\"A custom package of the catalog.\"\"\"\n\n"
                                     "    version(\"1.0\", sha256=\"0\" * 64)\n",
        "cfg/packages.yaml": {"packages": {"gcc": {"externals": [{"spec": "gcc@12.2.0", "prefix": "/usr"}]}}},
        "cfg/repos.yaml": {"repos": ["/software-catalog"]},
        "README.md": "catalog\n",
    })
    git(root, "add", "-A")
    git(root, "commit", "-qm", "catalog")
    return root
