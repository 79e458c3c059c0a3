"""The per-image fan-out of the GitHub workflow: the images that need site work, as a job matrix.

The workflow's convert + test job runs once per entry of `{"include": [...]}`; the entries come
from the same plan build-all makes (digests, the Docker engine, and the site's tested/ and failed/),
so the workflow decides nothing itself. GitHub rejects a matrix with no entries, so the step
outputs also carry `has_work`, which the workflow tests to skip the later jobs cleanly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ci.github.outputs import publish_step_summary, write_outputs
from ci.plan import Plan, PlannedImage


def entry(image: PlannedImage) -> dict[str, Any]:
    """One matrix entry: what the job needs (`image`, for --only) and what its name may show."""
    return {
        "image": image.name,
        "version": image.spec.version,
        "digest12": image.digest12,
        "build": image.action.value,
        "reason": image.site_reason,
        "tests": len(image.spec.tests),
    }


@dataclass(frozen=True)
class Matrix:
    """The images with site work (transfer, convert, test, promote), parents first."""

    entries: tuple[dict[str, Any], ...]

    @property
    def images(self) -> list[str]:
        return [item["image"] for item in self.entries]

    @property
    def has_work(self) -> bool:
        return bool(self.entries)

    def as_github(self) -> dict[str, list[dict[str, Any]]]:
        return {"include": [dict(item) for item in self.entries]}

    def outputs(self) -> dict[str, str]:
        """The step outputs the workflow reads: the matrix, whether there is work, and the names."""
        return {
            "matrix": json.dumps(self.as_github(), separators=(",", ":")),
            "has_work": "true" if self.has_work else "false",
            "images": ",".join(self.images),
            "count": str(len(self.entries)),
        }


def github_matrix(plan: Plan) -> dict[str, list[dict[str, Any]]]:
    """`{"include": [...]}` for the images of a site-aware plan that need site work; empty when none."""
    return matrix_for(plan).as_github()


def matrix_for(plan: Plan) -> Matrix:
    """The matrix of a plan made with the site listing (`api.plan(..., site=True)`).

    Only selected images whose digest is not settled at the site (or forced, or retried) are in
    it; a parent that must be built for them, but is itself tested, is built by the build job and
    gets no entry.
    """
    return Matrix(tuple(entry(image) for image in plan.images.values() if image.needs_site))


def plan_markdown(plan: Plan, matrix: Matrix) -> str:
    """The plan as a Markdown table for the step summary of the job that made the matrix."""
    lines = [f"### Plan: {len(matrix.entries)} of {len(plan.images)} images need the site steps", ""]
    if not plan.images:
        return "\n".join([*lines, "No definitions found."])
    lines += ["| image | version | digest | build | site | reason |", "|---|---|---|---|---|---|"]
    for image in plan.images.values():
        site = "to do" if image.needs_site else (image.site_state or "-")
        reason = image.site_reason or image.reason
        lines.append(f"| {image.name} | {image.spec.version} | `{image.digest12}` | {image.action.value} | "
                     f"{site} | {reason.replace('|', '/')} |")
    if not matrix.has_work:
        lines += ["", "Nothing to do: the build, transfer, convert + test and validate jobs are skipped."]
    return "\n".join(lines)


def publish(plan: Plan, matrix: Matrix) -> list[str]:
    """Write the step outputs and the plan summary when in GitHub Actions; say where they went."""
    said = []
    target = write_outputs(matrix.outputs())
    if target is not None:
        said.append(f"step outputs written to {target}")
    summary = publish_step_summary(plan_markdown(plan, matrix))
    if summary is not None:
        said.append(f"plan appended to the step summary {summary}")
    return said
