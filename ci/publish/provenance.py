"""The provenance record of a published artifact: what it was built from, how it was judged, by what.

One JSON document per published artifact: the definition digest and test digest, the source
commit (and repository) it was built from, the build and test results of the run that tested it,
the run id, and this tool's version. Registries carry it as an attached artifact (and the ORAS
manifest's annotations); object stores as `<file>.provenance.json` beside the file. It is signed
like the file, so a verifier can trust what it says.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

FORMAT = "containers-ci/provenance/v1"
MEDIA_TYPE = "application/vnd.containers-ci.provenance.v1+json"


def tool_version() -> str:
    try:
        return metadata.version("containers-ci")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def source_commit(project_dir: Path) -> dict[str, str]:
    """The commit the definitions came from: GitHub's variables in a workflow, else `git` in the project."""
    if os.environ.get("GITHUB_SHA"):
        return {"commit": os.environ["GITHUB_SHA"], "repository": os.environ.get("GITHUB_REPOSITORY", ""),
                "ref": os.environ.get("GITHUB_REF", "")}
    try:
        result = subprocess.run(["git", "-C", str(project_dir), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return {"commit": "unknown"}
    commit = result.stdout.strip() if result.returncode == 0 else "unknown"
    return {"commit": commit}


def record(*, result: Mapping[str, Any], subject: Mapping[str, Any], source: Mapping[str, str],
           published: str) -> dict[str, Any]:
    """The provenance of one artifact, from the promoted result (`tested/<name>/<stem>/result.json`)."""
    tests = [{"name": t.get("name"), "passed": bool(t.get("passed")), "reasons": list(t.get("reasons") or []),
              **({"metrics": t["metrics"]} if isinstance(t.get("metrics"), Mapping) else {})}
             for t in result.get("tests") or [] if isinstance(t, Mapping)]
    return {
        "format": FORMAT,
        "subject": dict(subject),
        "definition": {"name": result.get("name"), "arch": result.get("arch"), "version": result.get("version"),
                       "digest": result.get("digest"), "test_digest": result.get("test_digest")},
        "source": dict(source),
        "build": {"run_id": result.get("run_id"), "verdict": result.get("verdict"),
                  "image_file": result.get("image_file")},
        "tests": tests,
        "tool": {"name": "containers-ci", "version": tool_version()},
        "published": published,
    }


def to_bytes(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode()
