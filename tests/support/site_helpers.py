"""Shared helpers for the HPC-site tests: small definition trees, isolated settings, and checks.

Every project lives in its own tmp_path folder with its own site root, state dir, Slurm job
prefix and Docker registry prefix, and a token in each Dockerfile so that no two tests (and no
earlier run) share a digest. Images are tiny: one `RUN echo` on top of the local Debian base
image, so builds hit the layer cache of the base and pushes send one small layer.

Tests are shell scripts with a declared expectation; the builders below make the common ones:
a test that passes, one that exits non-zero, one that prints a metric, one that sleeps.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from ci import api
from ci.config.settings import Settings, deep_merge, load_settings
from ci.local import services as local
from ci.pipeline.progress import ProgressPrinter
from ci.pipeline.report import RunReport
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.services import (
    BASE_IMAGE,
    DOCKER,
    REGISTRY,
    require,  # noqa: F401 - tests of other branches import it from here
    require_site_services,
)

EXAMPLES_DIR = EXAMPLES
LIMITS = {"build": 2, "transfer": 1, "convert": 2, "test": 4}


# --------------------------------------------------------------------------------------------
# Test scripts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One container test: a shell body and how it is judged (container.yaml's `tests:` entry)."""

    name: str
    body: str
    expect: Mapping[str, Any] = field(default_factory=dict)
    time: str = "00:05:00"
    partition: str | None = None

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "script": f"tests/{self.name}.sh",
                                 "slurm": {"nodes": 1, "ntasks": 1, "time": self.time}}
        if self.partition:
            entry["slurm"]["partition"] = self.partition
        if self.expect:
            entry["expect"] = dict(self.expect)
        return entry


def passing(name: str = "smoke", sleep: float = 0) -> Check:
    pause = f"sleep {sleep}\n" if sleep else ""
    return Check(name, f'{pause}echo "image $CI_IMAGE test $CI_TEST"\ncat /etc/debian_version\necho "Test success"\n',
                 {"exit_code": 0, "patterns": ["Test success"]})


def failing(name: str = "broken", code: int = 3) -> Check:
    return Check(name, f'echo "about to fail with {code}"\nexit {code}\n', {"exit_code": 0})


def metric(name: str = "bandwidth", value: float = 1.5, minimum: float = 10.0, unit: str = "GB/s") -> Check:
    return Check(name, f'echo "busbw {value} {unit}"\n',
                 {"metrics": {"busbw": {"regex": r"busbw\s+([0-9.]+)", "min": minimum, "unit": unit}}})


def sleeping(name: str = "sleeper", seconds: int = 300) -> Check:
    return Check(name, f'echo "sleeping {seconds}s"\nsleep {seconds}\necho "woke up"\n', {"exit_code": 0})


# --------------------------------------------------------------------------------------------
# A project: definitions + an isolated site, state dir, job prefix
# --------------------------------------------------------------------------------------------


class SiteProject:
    """A definitions tree and a site in a temporary folder, isolated from every other run."""

    def __init__(self, root: Path, *, site_root: str | None = None, definitions: Path | None = None,
                 shared_images: bool = False):
        """`definitions`: an existing tree (default: a new one under `root`). `shared_images`: build
        under the default tags (no registry prefix), reusing and keeping what the Docker cache and
        the registry hold already, as a person's `inv build-all` would."""
        self.token = uuid.uuid4().hex[:10]
        self.root = root
        self.definitions = definitions or root / "definitions"
        self.definitions.mkdir(parents=True, exist_ok=True)
        self.site_root = site_root or str(root / "site")
        self.state_dir = root / "state"
        self.job_prefix = f"cci{self.token[:8]}"
        self.shared_images = shared_images
        self.registry_prefix = "" if shared_images else f"citest{self.token}/"
        self.images: dict[str, str] = {}  # name -> version
        self.console_output = io.StringIO()
        self.reports: list[RunReport] = []
        self.registries = {REGISTRY}  # where conversions pulled from (their tags are removed afterwards)

    # -- definitions ---------------------------------------------------------------------------

    def add(self, name: str, checks: Sequence[Check] = (), *, parent: str = BASE_IMAGE, version: str = "1.0",
            extra: str = "") -> Path:
        folder = self.definitions / "amd64" / name
        (folder / "tests").mkdir(parents=True, exist_ok=True)
        (folder / "Dockerfile").write_text(f"FROM {parent}\nRUN echo {self.token}-{name} > /{name}.txt\n{extra}",
                                           encoding="utf-8")
        meta: dict[str, Any] = {"version": version}
        if checks:
            meta["tests"] = [check.entry() for check in checks]
        (folder / "container.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")
        for check in checks:
            script = folder / "tests" / f"{check.name}.sh"
            script.write_text("#!/bin/sh\n" + textwrap.dedent(check.body), encoding="utf-8")
            script.chmod(0o755)
        self.images[name] = version
        return folder

    # -- configuration -------------------------------------------------------------------------

    def config(self, **site: Any) -> dict[str, Any]:
        """The `ci` configuration section of this project (also written as a `-f` file for `inv`)."""
        site_section = deep_merge({
            "root": self.site_root, "engine": "charliecloud", "scheduler": "slurm", "poll_interval": 0.5,
            "job_prefix": self.job_prefix, "registry": {"address": REGISTRY, "insecure": True},
        }, site)
        return {
            "profile": "local",
            "definitions": str(self.definitions),
            "arch": ["amd64"],
            "registry_prefix": self.registry_prefix,
            "state_dir": str(self.state_dir),
            "docker": {"client": DOCKER, "buildkit": True},
            "limits": LIMITS,
            "site": site_section,
            # invoke.yaml's own profile "local" sets limits too; under `inv -f` it would win over ours
            "profiles": {"local": {"limits": LIMITS}},
        }

    def settings(self, **site: Any) -> Settings:
        return load_settings(self.config(**site), PROJECT_DIR, profile="local")

    def write_config(self, path: Path | None = None, **site: Any) -> Path:
        """An invoke config file (`inv -f FILE`) with this project's `ci` section."""
        path = path or self.root / "invoke-test.yaml"
        path.write_text(yaml.safe_dump({"ci": self.config(**site)}, sort_keys=False), encoding="utf-8")
        return path

    # -- running -------------------------------------------------------------------------------

    def run(self, settings: Settings | None = None, **kwargs: Any) -> RunReport:
        console = Console(file=self.console_output, width=200, force_terminal=False)
        report = api.run_pipeline(settings or self.settings(), listeners=[ProgressPrinter(console)], **kwargs)
        self.reports.append(report)
        return report

    def run_folder(self, run_id: str) -> Path:
        return self.state_dir / "runs" / run_id

    def events(self, run_id: str) -> list[dict[str, Any]]:
        path = self.run_folder(run_id) / "events.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def report_json(self, run_id: str) -> dict[str, Any]:
        return dict(json.loads((self.run_folder(run_id) / "report.json").read_text(encoding="utf-8")))

    def site_path(self, *parts: str) -> Path:
        return Path(self.site_root, *parts)

    def inv_command(self, *args: str, config: Path | None = None) -> list[str]:
        """`python -m invoke -f <this project's config> <args>` against the project's tasks.py."""
        return [sys.executable, "-m", "invoke", "--search-root", str(PROJECT_DIR), "-f",
                str(config or self.write_config()), *args]

    def inv(self, *args: str, config: Path | None = None, timeout: float = 300,
            env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.inv_command(*args, config=config), capture_output=True, text=True, timeout=timeout,
                              cwd=PROJECT_DIR, env={**os.environ, **(env or {})}, check=False)

    # -- cleaning up ---------------------------------------------------------------------------

    def jobs(self, *, all_states: bool = True) -> list[tuple[str, str, str]]:
        """(job id, name, state) of every Slurm job of this project that slurmctld still remembers."""
        return slurm_jobs(self.job_prefix, all_states=all_states)

    def cleanup(self) -> None:
        active = [job_id for job_id, _, _ in self.jobs(all_states=False)]
        if active:
            subprocess.run(["scancel", *active], capture_output=True, check=False)
        if self.shared_images:
            return  # images and registry tags are the cache's, not ours to remove
        pulled = {(image.name, f"{image.version}-{image.digest12}") for report in self.reports
                  for image in report.images}
        for path in (self.state_dir / "runs").glob("*/report.json"):  # runs of `inv` subprocesses too
            for image in json.loads(path.read_text(encoding="utf-8")).get("images", []):
                pulled.add((image["name"], f"{image['version']}-{image['digest12']}"))
        remove_images(self.registry_prefix, {f"{registry}/{name}:{tag}" for name, tag in pulled
                                             for registry in self.registries})
        for name, tag in sorted(pulled):
            delete_from_registry(name, tag)


def job_label(name: str, prefix: str) -> str:
    """`<image>-<test>` of a job name `<prefix><image>-<test>-<hash8>` (ci.schedulers.base.job_name)."""
    return name[len(prefix):].rsplit("-", 1)[0]


def slurm_jobs(prefix: str, *, all_states: bool = True) -> list[tuple[str, str, str]]:
    """(id, name, state) of our jobs: squeue's, and with all_states the completion log's too, because
    slurmctld forgets finished jobs after MinJobAge (300 s), less than a long run on a busy machine."""
    argv = ["squeue", "-h", "-o", "%i|%j|%T"] + (["-t", "all"] if all_states else [])
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    rows: dict[str, tuple[str, str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3 and parts[1].startswith(prefix):
            rows[parts[0]] = (parts[0], parts[1], parts[2])
    if all_states:
        try:
            completed = local.SLURM_JOBCOMP_LOG.read_text(errors="replace").splitlines()
        except OSError:
            completed = []
        for line in completed:
            fields = dict(item.split("=", 1) for item in line.split() if "=" in item)
            job_id, name, state = fields.get("JobId", ""), fields.get("Name", ""), fields.get("JobState", "")
            if job_id and name.startswith(prefix) and job_id not in rows:
                rows[job_id] = (job_id, name, state)
    return list(rows.values())


def remove_images(prefix: str, references: set[str]) -> None:
    """Remove the Docker images a project made: its tags (by prefix) and the registry references that
    conversions pulled (`127.0.0.1:5000/<name>:<version>-<digest12>`)."""
    listed = subprocess.run([DOCKER, "images", "--format", "{{.Repository}}:{{.Tag}}"],
                            capture_output=True, text=True, check=False).stdout.split()
    doomed = sorted(ref for ref in listed if ref.startswith(prefix) or ref in references)
    if doomed:
        subprocess.run([DOCKER, "rmi", "-f", *doomed], capture_output=True, check=False)


def delete_from_registry(repository: str, tag: str, address: str = REGISTRY) -> None:
    """Leave the registry as we found it (its config allows deletes; blobs wait for its GC)."""
    url = f"http://{address}/v2/{repository}/manifests/{tag}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD", headers={"Accept": accept}),
                                    timeout=5) as answer:
            digest = answer.headers["Docker-Content-Digest"]
        urllib.request.urlopen(urllib.request.Request(url.rsplit("/", 1)[0] + f"/{digest}", method="DELETE"),
                               timeout=5).close()
    except (OSError, urllib.error.URLError):
        pass


def isolated_project(root: Path, **kwargs: Any) -> Iterator[SiteProject]:
    """The body of a test module's project fixture: check the services, clean up afterwards."""
    require_site_services()
    project = SiteProject(root, **kwargs)
    try:
        yield project
    finally:
        project.cleanup()


# --------------------------------------------------------------------------------------------
# Checks on the site
# --------------------------------------------------------------------------------------------


def promoted(site_root: str | Path, verdict: str) -> dict[str, list[str]]:
    """{image name: [stem, ...]} under tested/ or failed/."""
    folder = Path(site_root, verdict)
    if not folder.is_dir():
        return {}
    return {name.name: sorted(p.name for p in name.iterdir()) for name in sorted(folder.iterdir()) if name.is_dir()}


def assert_complete(folder: Path, tests: Sequence[str] = ()) -> dict[str, Any]:
    """A promoted folder holds the image file, result.json and every test's log and exit file; nothing
    half-written (.part, .tmp, scratch folders). Returns result.json."""
    names = {path.name for path in folder.iterdir()}
    images = [name for name in names if name.endswith((".sqfs", ".sif", ".tar"))]
    assert images == [f"{folder.name}.sqfs"], f"{folder}: image file missing or extra: {sorted(names)}"
    assert (folder / images[0]).stat().st_size > 1_000_000
    assert "result.json" in names, f"{folder}: no result.json"
    leftovers = [str(path) for path in folder.rglob("*") if re.search(r"\.(part|tmp)$|\.part\.|\.d$", path.name)]
    assert not leftovers, f"half-written files in {folder}: {leftovers}"
    result = dict(json.loads((folder / "result.json").read_text(encoding="utf-8")))
    for test in tests:
        assert (folder / "logs" / f"{test}.out").is_file(), f"{folder}: no log of test {test}"
        assert (folder / "logs" / f"{test}.exit").is_file(), f"{folder}: no exit file of test {test}"
        assert (folder / f"{test}.job.sh").is_file(), f"{folder}: no job script of test {test}"
    return result


def assert_site_consistent(site_root: str | Path, expected_tests: Mapping[str, Sequence[str]]) -> None:
    """Every folder in tested/ and failed/ is complete, and each image is there exactly once."""
    for verdict in ("tested", "failed"):
        for name, stems in promoted(site_root, verdict).items():
            assert len(stems) == 1, f"{verdict}/{name} holds {stems}"
            assert_complete(Path(site_root, verdict, name, stems[0]), expected_tests.get(name, ()))
    tested, failed = promoted(site_root, "tested"), promoted(site_root, "failed")
    assert not set(tested) & set(failed), f"promoted twice: {set(tested) & set(failed)}"


def wait_for(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def image_report(report: RunReport, name: str) -> Any:
    (found,) = [image for image in report.images if image.name == name]
    return found


def step_data(report: RunReport, name: str, step: str) -> dict[str, Any]:
    image = image_report(report, name)
    (found,) = [s for s in image.steps if s.name == step]
    return dict(found.data)
