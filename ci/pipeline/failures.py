"""Failed builds, recorded on the site for their digest, so later runs report them instead of retrying.

A build that fails is filed like an image whose tests failed: `failed/<name>/<stem>/` with
`logs/build.log` and a result.json saying `"step": "build"`, renamed into place in one step. The
plan's site listing then sees the digest in failed/, so the next run skips it ("failed before")
unless `--retry-failed`; a changed definition has a new digest and is built again. An image built
on one that failed to build cannot be built either: it is reported as blocked, with the log's place.
"""

from __future__ import annotations

import json
import posixpath
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ci.errors import CIError
from ci.pipeline.report import RunReport
from ci.pipeline.runs import RunFolder
from ci.plan import Plan, PlannedImage
from ci.site.layout import FAILED, Site, image_stem

BUILD_STEP = "build"
LOG_LINES = 20  # the tail of the build log kept in result.json, for reports without the site at hand


def record(site: Site, run: RunFolder, report: RunReport) -> list[str]:
    """File every image whose build step failed in this run under failed/; returns the folders."""
    recorded = []
    for image in report.images:
        build = next((step for step in image.steps if step.name == BUILD_STEP), None)
        if build is None or build.state != "failed":
            continue
        stem = f"{image.name}-{image.version}-{image.digest12}"
        key = f"{image.arch}/{image.name}"
        staged = posixpath.join(site.staging(run.run_id, key), stem)
        log = run.log_path(key, BUILD_STEP)
        site.host.run(["mkdir", "-p", posixpath.join(staged, "logs")])
        tail: list[str] = []
        if log.exists():
            site.host.put(log, posixpath.join(staged, "logs", "build.log"))
            tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_LINES:]
        result = {"name": image.name, "version": image.version, "digest12": image.digest12, "tag": image.tag,
                  "run_id": run.run_id, "verdict": FAILED, "step": BUILD_STEP, "detail": build.detail,
                  "log": "logs/build.log" if log.exists() else None, "log_tail": tail, "time": time.time(),
                  "tests": []}
        recorded.append(site.promote(run.run_id, key, stem, FAILED, result))
    return recorded


@dataclass(frozen=True)
class BuildFailure:
    """A recorded build failure: which run, what it said, where its log is."""

    name: str
    digest12: str
    run_id: str
    detail: str
    log: str | None

    def describe(self) -> str:
        where = f"; log: {self.log}" if self.log else ""
        return f"its build failed in run {self.run_id} ({self.detail}){where}"


def recorded_failure(site: Site, image: PlannedImage) -> BuildFailure | None:
    """The build failure recorded for this image's digest, if its failed/ entry is one."""
    stem = image_stem(image.name, image.spec.version, image.digest)
    folder = site.path(FAILED, image.name, stem)
    result_file = posixpath.join(folder, "result.json")
    if not site.host.exists(result_file):
        return None
    try:
        result: Mapping[str, Any] = json.loads(site.host.read_text(result_file))
    except ValueError:
        return None
    if result.get("step") != BUILD_STEP:
        return None
    log = posixpath.join(folder, str(result["log"])) if result.get("log") else None
    return BuildFailure(image.name, image.digest12, str(result.get("run_id", "?")), str(result.get("detail", "")),
                        log)


def failures_in(site: Site, plan: Plan) -> dict[str, BuildFailure]:
    """Recorded build failures of the plan's images that the plan does not retry, by image key."""
    found = {}
    for key, image in plan.images.items():
        if image.site_state == FAILED and not image.needs_site:
            failure = recorded_failure(site, image)
            if failure is not None:
                found[key] = failure
    return found


def blocked_by(plan: Plan, failures: Mapping[str, BuildFailure]) -> dict[str, str]:
    """Images built (directly or not) on an image whose build failed: {key: the failed ancestor's key}."""
    blocked: dict[str, str] = {}
    for key, image in plan.images.items():  # parents come first
        for parent in image.parents:
            cause = parent if parent in failures else blocked.get(parent)
            if cause is not None:
                blocked[key] = cause
                break
    return blocked



class RecordedFailure(CIError):
    """Asked to build what failed to build before, without --retry-failed."""

    def __init__(self, lines: list[str]):
        self.lines = lines
        super().__init__("not built again: " + "; ".join(lines))
