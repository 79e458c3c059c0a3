"""Results for people and machines: a terminal table, JSON, JUnit XML and a Markdown summary.

All four are rendered from one `RunReport`, which is built from the executor's outcomes, so
they can never disagree with each other. Details and test output are not ours (a test printing
colours writes ESC bytes, a build error quotes the Dockerfile): JUnit shows characters XML cannot
hold as escapes (`\x1b`) instead of writing a file no reader parses, and Markdown cells show
`<`, `|`, line breaks and control characters as text, so a detail cannot hide or restyle the summary.
"""

from __future__ import annotations

import html
import json
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.table import Table

from ci.errors import printable
from ci.pipeline import timeline
from ci.pipeline.executor import ImageOutcome, State
from ci.pipeline.terminal import styled
from ci.plan import Action, Plan

# Characters XML 1.0 cannot hold, even escaped (ElementTree writes them as they are).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
SUMMARY_KEY = "summary_markdown"  # the data key of the Note that carries a run's summary to listeners

_STATE_STYLE = {"done": "green", "skipped": "yellow", "failed": "bold red", "pending": "dim", "up to date": "cyan",
                "cancelled": "yellow"}


@dataclass
class StepReport:
    name: str
    state: str
    duration: float
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageReport:
    name: str
    version: str
    digest12: str
    tag: str
    action: str
    reason: str
    state: str
    detail: str
    duration: float
    steps: list[StepReport] = field(default_factory=list)
    arch: str = ""
    build_host: str = ""  # the build host that built (or re-tagged) it in this run


@dataclass
class RunReport:
    run_id: str
    profile: str
    started: float
    finished: float
    images: list[ImageReport] = field(default_factory=list)
    unsupported: list[dict[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(image.state not in ("failed", "skipped", "cancelled") for image in self.images)

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for image in self.images:
            counts[image.state] = counts.get(image.state, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        elapsed = round(self.finished - self.started, 3)
        return {**asdict(self), "ok": self.ok, "counts": self.counts(), "elapsed": elapsed}


def build_report(run_id: str, profile: str, plan: Plan, outcomes: dict[str, ImageOutcome],
                 started: float, finished: float | None = None) -> RunReport:
    report = RunReport(run_id=run_id, profile=profile, started=started, finished=finished or time.time(),
                       unsupported=[{"name": u.name, "arch": u.arch, "kind": u.kind, "reason": u.reason}
                                    for u in plan.unsupported])
    for key, planned in plan.images.items():
        outcome = outcomes.get(key)
        if outcome is None or (planned.action is Action.SKIP and not outcome.steps):
            state, detail, duration, steps = "up to date", planned.reason, 0.0, []
        else:
            state = outcome.state.value
            detail = outcome.detail
            duration = (outcome.finished or report.finished) - (outcome.started or report.finished) \
                if outcome.started else 0.0
            steps = [StepReport(name=e.step, state=e.state.value, duration=round(e.duration, 3), detail=e.detail,
                                data=dict(e.data)) for e in outcome.steps.values()]
            if outcome.state is State.PENDING:
                state = "pending"
        report.images.append(ImageReport(
            name=planned.name, version=planned.spec.version, digest12=planned.digest12, tag=planned.tag,
            action=planned.action.value, reason=planned.reason, state=state, detail=detail,
            duration=round(duration, 3), steps=steps, arch=planned.spec.arch,
            build_host=next((str(step.data.get("host", "")) for step in steps if step.name == "build"), "")))
    return report


def _seconds(value: float) -> str:
    return f"{value:.1f}s" if value < 120 else f"{int(value // 60)}m{int(value % 60):02d}s"


def render_table(report: RunReport, console: Console) -> None:
    """The run as a table; every cell is a `Text` (ci.pipeline.terminal), so no name is read as markup."""
    table = Table(title=styled(f"run {report.run_id} ({report.profile})"), title_justify="left")
    for column in ("image", "version", "digest", "result", "time", "detail"):
        table.add_column(column, overflow="fold")
    for image in report.images:
        table.add_row(styled(image.name), styled(image.version), styled(image.digest12),
                      styled((image.state, _STATE_STYLE.get(image.state, ""))),
                      styled(_seconds(image.duration) if image.duration else "-"), styled(image.detail or image.reason))
    console.print(table)
    for item in report.unsupported:
        console.print(styled(("not handled", "yellow"), f" {item['arch']}/{item['name']}: {item['reason']}"))
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts().items())) or "nothing to do"
    console.print(styled(f"{counts} in {_seconds(report.finished - report.started)}"))


def to_json(report: RunReport) -> str:
    return json.dumps(report.as_dict(), indent=2, default=str)


def _test_case(suite: ET.Element, image: ImageReport, test: dict[str, Any]) -> bool:
    """One testcase per container test, with its metrics as properties; returns whether it failed."""
    case = ET.SubElement(suite, "testcase", classname=image.name, name=f"test {test.get('name')}", time="0")
    metrics = test.get("metrics") or []
    if metrics:
        properties = ET.SubElement(case, "properties")
        for metric in metrics:
            ET.SubElement(properties, "property", name=f"metric.{metric['name']}",
                          value=f"{metric.get('value')} {metric.get('unit') or ''}".strip())
    if test.get("output_tail"):
        ET.SubElement(case, "system-out").text = str(test["output_tail"])
    if not test.get("passed"):
        reasons = "; ".join(test.get("reasons") or []) or "failed"
        ET.SubElement(case, "failure", message=reasons[:500]).text = reasons
        return True
    return False


def to_junit(report: RunReport) -> str:
    """One testcase per image step and one per container test, as CI systems expect."""
    suite = ET.Element("testsuite", name=f"containers-ci {report.run_id}",
                       timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(report.started)),
                       time=f"{report.finished - report.started:.3f}")
    tests = failures = skipped = 0
    for image in report.images:
        steps = image.steps or [StepReport(name="build", state=image.state, duration=0.0,
                                           detail=image.detail or image.reason)]
        for step in steps:
            tests += 1
            case = ET.SubElement(suite, "testcase", classname=image.name, name=step.name, time=f"{step.duration:.3f}")
            if step.state == "failed":
                failures += 1
                ET.SubElement(case, "failure", message=step.detail[:500]).text = step.detail
            elif step.state in ("skipped", "up to date"):
                skipped += 1
                ET.SubElement(case, "skipped", message=step.detail or image.reason)
            for test in step.data.get("tests", []) if step.name == "test" else []:
                tests += 1
                failures += _test_case(suite, image, test)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    ET.indent(suite)
    text = ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
    return _NOT_XML.sub(lambda match: match.group().encode("unicode_escape", "backslashreplace").decode("ascii"), text)


def _cell(value: object) -> str:
    """Text from elsewhere as inline Markdown: one line, no HTML, no table break, no control characters."""
    return html.escape(printable(str(value).replace("\r", " ").replace("\n", " ")), quote=False).replace("|", "\\|")


def to_markdown(report: RunReport, events: Sequence[Mapping[str, Any]] = ()) -> str:
    icon = {"done": "✅", "failed": "❌", "skipped": "⏭️", "up to date": "💤", "pending": "⏳"}
    lines = [f"## Container images, run `{report.run_id}`", "",
             "| image | version | digest | result | time | detail |", "|---|---|---|---|---|---|"]
    for image in report.images:
        detail = _cell(image.detail or image.reason)
        lines.append(f"| `{image.name}` | {_cell(image.version)} | `{image.digest12}` | {icon.get(image.state, '')} "
                     f"{image.state} | {_seconds(image.duration) if image.duration else '-'} | {detail} |")
    for item in report.unsupported:
        lines.append(f"\n> `{item['arch']}/{item['name']}` not handled: {_cell(item['reason'])}")
    counts = ", ".join(f"{n} {state}" for state, n in sorted(report.counts().items())) or "nothing to do"
    lines += ["", f"**{counts}** in {_seconds(report.finished - report.started)}", ""]
    lines += _published_markdown(report)
    hosts: dict[str, list[str]] = {}
    for image in report.images:
        if image.build_host:
            hosts.setdefault(image.build_host, []).append(f"`{image.name}`")
    if hosts:
        built = "; ".join(f"**{host}**: {', '.join(names)}" for host, names in sorted(hosts.items()))
        lines += [f"Build hosts: {built}", ""]
    return "\n".join(lines) + timeline.markdown(events)


def _published_markdown(report: RunReport) -> list[str]:
    """What the publish steps sent where, with the pull command of each (ci.publish's outcomes)."""
    rows = [outcome for image in report.images for step in image.steps if step.name == "publish"
            for outcome in step.data.get("published") or [] if isinstance(outcome, Mapping)]
    if not rows:
        return []
    lines = ["### Published", "", "| image | target | state | pull |", "|---|---|---|---|"]
    for row in rows:
        state = str(row.get("state", "")) + (f": {row.get('error')}" if row.get("error") else "")
        lines.append(f"| `{row.get('name')}` {_cell(row.get('version'))} | {_cell(row.get('target'))} | "
                     f"{_cell(state[:300])} | `{_cell(row.get('pull') or '-').replace('`', '')}` |")
    return [*lines, ""]


def render_plan(plan: Plan, console: Console) -> None:
    """The plan as a table; the root, names and reasons are `Text`, never markup (a root under `[/x]`)."""
    table = Table(title=styled(f"plan for {plan.root}"), title_justify="left")
    for column in ("image", "version", "digest", "action", "reason", "parents"):
        table.add_column(column, overflow="fold")
    for image in plan.images.values():
        style = {"build": "bold", "tag": "cyan", "skip": "dim"}[image.action.value]
        parents = ", ".join(plan.images[p].name for p in image.parents) or "-"
        table.add_row(styled(image.name), styled(image.spec.version), styled(image.digest12),
                      styled((image.action.value, style)), styled(image.reason), styled(parents))
    console.print(table)
    for item in plan.unsupported:
        console.print(styled(("not handled", "yellow"), f" {item.arch}/{item.name} ({item.kind}): {item.reason}"))
    todo = len(plan.to_build())
    console.print(styled(f"{len(plan.images)} images, {todo} to build, {len(plan.images) - todo} up to date"))
