"""The service's one adapter to the pipeline: what an image is, and running one build of it.

Everything the service needs from the pipeline goes through here (and from here through
`ci.api`): the digest of a requested image, the site's engine, preparing a pool slot's site, and
running `ci.api.run_pipeline` for one image. A build runs in a child process of its own
(`python -m ci.service.builder ORDER`), in its own process group. A cancel reaches the run's
CancelToken (it stops, cancels its batch jobs, releases the site; the group is killed if it does not
end within GRACE_SECONDS); the death of the server (the child asks the kernel for SIGTERM when its
parent goes) ends the whole group at once, and the next user of the slot removes what it left (a
dead lock, its batch jobs). Progress
comes from the run's own event stream (`<state>/runs/<run-id>/events.jsonl`), the build's log
from the child's output and the step logs, redacted before anyone can read them.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ci import api
from ci.config.settings import Settings, load_settings
from ci.engines import select_engine
from ci.errors import CIError, DefinitionError, Problem
from ci.pipeline import terminal
from ci.pipeline.progress import ProgressPrinter
from ci.plan import PlannedImage, make_plan
from ci.service.core.security import Redactor
from ci.service.models import Status
from ci.shutdown import CancelToken, set_handlers
from ci.site.layout import FAILED, TESTED, image_stem

SUFFIX = {"apptainer": "sif", "singularity": "sif", "charliecloud": "sqfs", "docker": "tar"}
# Which site engines make a file the requested engine runs (Apptainer/SingularityCE run SquashFS images too).
COMPATIBLE = {"singularity": ("apptainer", "singularity", "charliecloud"),
              "apptainer": ("apptainer", "singularity", "charliecloud"),
              "charliecloud": ("charliecloud",), "docker": ("docker",)}
STEP_STATUS = {"build": (Status.BUILDING, "building the image"),
               "transfer": (Status.BUILDING, "pushing the image to the site's registry"),
               "convert": (Status.CONVERTING, "converting to the site engine's image file"),
               "test": (Status.TESTING, "running the image's tests as batch jobs"),
               "promote": (Status.TESTING, "filing the tested image")}
_PR_SET_PDEATHSIG = 1
GRACE_SECONDS = 20.0  # a cancelled build's run gets this long to stop by itself; then its process group is killed


def with_tree(settings: Settings, definitions: Path, arch: str, *, workflow: bool = False) -> Settings:
    """The settings for one tree and architecture. A workflow step carries the machine's own target, so the
    site's per-architecture Spack target (ci.spack.targets) must not be added to it as a second requirement."""
    update: dict[str, Any] = {"definitions": definitions, "arches": (arch,)}
    if workflow:
        raw = copy.deepcopy(dict(settings.raw))
        raw["spack"] = {**dict(raw.get("spack") or {}), "targets": {}}
        update["raw"] = raw
    return settings.model_copy(update=update)


def planned_image(settings: Settings, name: str) -> PlannedImage:
    """The one image `name` of the settings' tree, with its digest (no engine, no site: nothing is run)."""
    catalog = api.catalog(settings)
    plan = make_plan(catalog, only=[name], registry_prefix=settings.registry_prefix)
    matches = [image for image in plan.images.values() if image.name == name]
    if not matches:
        variants = sorted(image.name for image in plan.images.values() if image.selected)
        raise DefinitionError([Problem(settings.definitions, "definition",
                                       f"'{name}' has variants ({', '.join(variants)})", "name one of them")])
    return matches[0]


def site_engine(settings: Settings) -> str:
    """The engine the site converts with (ci.site.engine, or for `auto` the one installed there)."""
    if settings.site.engine != "auto":
        return settings.site.engine
    host = api.site_host(settings)
    try:
        return select_engine("auto", host).name
    finally:
        host.close()


def slot_settings(settings: Settings, slot_root: str, slot: int, definitions: Path, arch: str, *,
                  workflow: bool = False) -> Settings:
    """The pipeline's settings for one pool slot: its own site root and Slurm job prefix."""
    raw = copy.deepcopy(dict(with_tree(settings, definitions, arch, workflow=workflow).raw))
    site = dict(raw.get("site") or {})
    site["root"] = slot_root
    site["job_prefix"] = f"{settings.site.job_prefix}s{slot}"
    raw.update(site=site, definitions=str(definitions), arch=[arch], state_dir=str(settings.state_dir),
               profiles={settings.profile: {}})
    return load_settings(raw, settings.project_dir, profile=settings.profile)


def settle_slot(settings: Settings) -> list[str]:
    """Make a slot's site usable after whatever ran there before: remove a lock whose process is dead,
    cancel batch jobs its runs left behind, remove old staging. A lock of a live process is left alone."""
    lines: list[str] = []
    site = api.open_site(settings)
    try:
        state = site.read_state()
        if state is not None and state.members and state.dead:
            owner = site.force_unlock()
            lines.append(f"removed the lock of {owner.describe() if owner else 'a run that is gone'}")
        lines += [line for line in api.cleanup(settings) if line != "nothing to clean"]
    finally:
        site.host.close()
    return lines


# ------------------------------------------------------------------------------------------------
# Running one build
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Order:
    """What the child process builds: everything it needs, written to a private file."""

    config: dict[str, Any]
    profile: str
    project_dir: str
    image: str
    run_id: str
    force: bool
    result: str  # where the child writes its outcome (JSON)
    image_copy: str  # where the child copies the finished image file
    parent: int = 0  # the server's pid: a child whose parent is already gone does not start


@dataclass(frozen=True)
class Outcome:
    status: Status
    message: str
    image_file: Path | None = None  # a private copy of the image file (FINISHED only)
    version: str = ""
    suffix: str = ""


def run(settings: Settings, *, image: str, run_id: str, force: bool, work: Path, log: Callable[[str], None],
        on_step: Callable[[Status, str], None], cancelled: threading.Event) -> Outcome:
    """Build, transfer, convert, test and file one image with the pipeline, in a child process.

    `log` gets the redacted lines of the build log as they come; `on_step` the status of each step;
    setting `cancelled` ends the child's whole process group.
    """
    work.mkdir(parents=True, exist_ok=True, mode=0o700)
    order = Order(config=_plain(settings.raw) | {"profiles": {settings.profile: {}}}, profile=settings.profile,
                  project_dir=str(settings.project_dir), image=image, run_id=run_id, force=force,
                  result=str(work / "result.json"), image_copy=str(work / "image.part"), parent=os.getpid())
    order_path = work / "order.json"
    descriptor = os.open(order_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump(order.__dict__, handle)
    child_log = work / "child.log"
    environment = {name: value for name, value in os.environ.items() if not name.startswith("CI_SERVICE_")}
    redact = Redactor.from_environment()
    events = settings.state_dir / "runs" / run_id / "events.jsonl"
    with child_log.open("wb") as output:
        child = subprocess.Popen([sys.executable, "-m", "ci.service.builder", str(order_path)], stdout=output,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=environment,
                                 start_new_session=True, cwd=str(settings.project_dir))
    tail = _Tail(child_log, redact, log)
    seen_events = 0
    stopped: float | None = None
    while True:
        try:
            child.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            pass
        if cancelled.is_set() and stopped is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGINT)  # the run cancels itself: no new step, its jobs scancelled
            stopped = time.monotonic()
        elif stopped is not None and time.monotonic() - stopped > GRACE_SECONDS:
            _kill_group(child.pid)  # a step that does not end in time (e.g. a long docker build)
        tail.pump()
        seen_events = _follow_events(events, seen_events, settings.state_dir / "runs" / run_id / "logs", image,
                                     redact, log, on_step)
    _kill_group(child.pid)  # anything the child left running in its group
    tail.pump(final=True)
    _follow_events(events, seen_events, settings.state_dir / "runs" / run_id / "logs", image, redact, log,
                   lambda _status, _message: None)
    order_path.unlink(missing_ok=True)
    if stopped is not None:
        return Outcome(Status.CANCELLED, "cancelled while it ran")
    try:
        result = json.loads(Path(order.result).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Outcome(Status.FAILED, f"the build process ended (exit code {child.returncode}) without a result; "
                                      "see the build log")
    if result.get("ok"):
        return Outcome(Status.FINISHED, redact(str(result.get("message", "finished"))), Path(order.image_copy),
                       version=str(result.get("version", "")), suffix=str(result.get("suffix", "")))
    return Outcome(Status.FAILED, redact(str(result.get("message") or "failed")))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _Tail:
    """Moves the child's output, whole lines at a time and redacted, into the build log."""

    def __init__(self, path: Path, redact: Redactor, sink: Callable[[str], None]):
        self.path, self.redact, self.sink, self.offset, self.partial = path, redact, sink, 0, b""

    def pump(self, final: bool = False) -> None:
        try:
            with self.path.open("rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except OSError:
            return
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = b"" if final else lines.pop()
        text = "\n".join(line.decode("utf-8", "replace") for line in lines if line or final)
        if text.strip():
            self.sink(self.redact(text) + "\n")


def _follow_events(events: Path, seen: int, logs: Path, image: str, redact: Redactor, log: Callable[[str], None],
                   on_step: Callable[[Status, str], None]) -> int:
    """Turn new step events into statuses; append each finished step's log to the build log."""
    try:
        lines = events.read_text(encoding="utf-8").splitlines()
    except OSError:
        return seen
    complete = lines[:-1] if lines and not lines[-1].endswith("}") else lines
    for line in complete[seen:]:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        step, state, key = event.get("step") or "", event.get("state"), str(event.get("image", ""))
        arch, _, name = key.rpartition("/")
        if name != image:
            continue  # a parent image built on the way: its steps are not this build's status
        if step in STEP_STATUS and state == "running":
            on_step(*STEP_STATUS[step])
        elif step in STEP_STATUS and state in ("done", "failed"):
            folder = logs / arch  # the run folder's logs/<arch>/<name>.<step>.log
            names = sorted(folder.glob(f"{name}.test-*.log")) if step == "test" else [folder / f"{name}.{step}.log"]
            for path in names:
                if path.is_file():
                    body = path.read_text(encoding="utf-8", errors="replace")
                    log(f"--- {path.name} ({state}) ---\n{redact(body)}\n")
    return len(complete)


# ------------------------------------------------------------------------------------------------
# The child process
# ------------------------------------------------------------------------------------------------


def _signals(token: CancelToken) -> None:
    """SIGINT, the server's cancel, cancels the run: it starts no further step, cancels its batch jobs and
    releases the site; whatever still runs after GRACE_SECONDS dies with the process group. SIGTERM comes
    from the kernel when the server dies: the group ends at once, so the build's slot is free for the
    replica that re-queues it (the next user of the slot removes the dead lock and the jobs left)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    def cancel(_signum: int, _frame: Any) -> None:
        token.cancel("cancelled through the image-creation service")
        timer = threading.Timer(GRACE_SECONDS, lambda: os.killpg(0, signal.SIGKILL))
        timer.daemon = True
        timer.start()

    set_handlers({signal.SIGINT: cancel, signal.SIGTERM: lambda _signum, _frame: os.killpg(0, signal.SIGKILL)})


def build_key(kind: str, digest: str, machine: dict[str, object]) -> str:
    """What makes two requests one build: the image's digest and the machine it is for."""
    text = json.dumps({"kind": kind, "digest": digest, "machine": machine}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def child_main(order_file: str) -> int:
    token = CancelToken()
    _signals(token)
    order = Order(**json.loads(Path(order_file).read_text(encoding="utf-8")))
    if order.parent and os.getppid() != order.parent:
        return 3  # the server died before the kernel could be asked to tell us
    console = terminal.console(file=sys.stdout, width=160, force_terminal=False, soft_wrap=True)

    def done(ok: bool, message: str, **more: str) -> int:
        Path(order.result).write_text(json.dumps({"ok": ok, "message": message, **more}), encoding="utf-8")
        return 0 if ok else 1

    try:
        settings = load_settings(order.config, Path(order.project_dir), profile=order.profile)
        report = api.run_pipeline(settings, only=[order.image], force=order.force, retry_failed=True,
                                  run_id=order.run_id, listeners=[ProgressPrinter(console)], cancel=token)
        (image,) = [found for found in report.images if found.name == order.image]
        if token.is_set():
            return done(False, f"cancelled ({token.reason})")
        site = api.open_site(settings)
        try:
            stem = image_stem(image.name, image.version, image.digest12)
            tested, failed = site.promoted_path(TESTED, image.name, stem), site.promoted_path(FAILED, image.name, stem)
            suffix = SUFFIX.get(site_engine(settings), "")
            if image.state not in ("failed", "skipped") and site.host.exists(f"{tested}/{stem}.{suffix}"):
                site.host.get(f"{tested}/{stem}.{suffix}", Path(order.image_copy))
                # The image store is the service's copy; the slot's tested/ folder would only double the space
                # (the database, not the slot, decides what is built again).
                site.host.run(["rm", "-rf", tested], check=False)
                return done(True, image.detail if image.state == "done" else "tested before (served from the site)",
                            version=image.version, suffix=suffix)
            if site.host.exists(failed):
                return done(False, f"the image's tests failed: {image.detail}")
            return done(False, image.detail or f"the pipeline ended with {image.state}")
        finally:
            site.host.close()
    except CIError as exc:
        console.print(f"error: {exc}", highlight=False, markup=False)
        return done(False, str(exc))
    except Exception as exc:  # a bug: keep the trace in the (private, then redacted) log, a sentence in the status
        console.print_exception()
        return done(False, f"internal error in the build: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.stderr.write("usage: python -m ci.service.builder ORDER.json (started by the service's workers)\n")
        sys.exit(2)
    sys.exit(child_main(sys.argv[1]))

