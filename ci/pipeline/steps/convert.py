"""The convert step: the site's engine makes the HPC image file (`.sif`, `.sqfs`) from the registry.

On the site host by default; with `ci.site.convert_on: compute` as a batch job on a compute node
(login nodes limit memory and CPU time), whose script this module renders. Either way the file
appears complete or not at all: the conversion writes `<file>.part` and renames it at the end.

The step then records the file's size, md5 and sha256 (`file_checksums`, run on the site host):
promotion writes them into result.json, and publishing checks that the bytes it sends are the
bytes that were tested (and sends the recorded md5 as Content-MD5 at once, with no pass over the
file before the upload can start).
"""

from __future__ import annotations

import posixpath
import shlex
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from ci.config.publish import DEFAULT_PART_SIZE_MB, MAX_PARTS, MIB, parts_in
from ci.engines.base import Engine, ImageSource, with_env
from ci.errors import SiteError
from ci.hosts import Host
from ci.pipeline.executor import StepResult
from ci.pipeline.steps.chain import ChainStep, wait_for_job
from ci.pipeline.testjobs import MARKER, one_line
from ci.resources import Resources
from ci.schedulers.base import JobSpec, job_name, never_starts


def render_conversion_script(*, engine: Engine, source: ImageSource, output: str, header: Sequence[str]) -> str:
    """A batch script converting one image on a compute node (large images, busy login nodes).

    `header` is the scheduler's directives for the job (`Scheduler.directives`). Like
    `Engine.convert`, it writes `<output>.part` and renames it only on success, so a killed job
    never leaves a half-written image file. Registry credentials are not available in a job
    script: use it with a registry the compute nodes reach without them, or a docker archive.
    """
    part = f"{output}.part"
    command = with_env(engine.conversion_command(source, part), engine.conversion_env(source))
    lines = ["#!/bin/sh", *(one_line(line, "the job directive") for line in header),
             "# " + one_line(f"containers-ci conversion job (generated): {source.describe()} with {engine.name}",
                             "the job description"),
             "set -u",
             f"rm -rf {shlex.quote(part)}",
             f'echo "{MARKER} converting on $(uname -n) at $(date -u +%Y-%m-%dT%H:%M:%SZ)"',
             shlex.join(command),
             "status=$?",
             f'if [ "$status" -eq 0 ]; then mv -f {shlex.quote(part)} {shlex.quote(output)} || status=$?; '
             f"else rm -rf {shlex.quote(part)}; fi",
             f'echo "{MARKER} exit status $status"',
             'exit "$status"']
    return "\n".join(lines) + "\n"


# The path is the script's $1, never part of the script; md5sum and sha256sum read the file side by side
# (two cores where there are), and a failing one fails the command. Not a regular file: exit 3.
# Beside them, the md5 of each $2-byte part (GNU split's --filter), as an S3 multipart upload of that
# part size sends it (Content-MD5): the store then checks every part against the tested bytes, and
# publishing hashes nothing but the sha256. Only for files of 2 to 10,000 parts; a split without
# --filter leaves them out (publishing computes them then). The parts' lines are the only output
# until they end; the size and the two hashes follow.
CHECKSUM_SCRIPT = ('[ -f "$1" ] || exit 3; s=$(stat -c %s -- "$1") || exit 1; p=""; '
                   f'if [ "$s" -gt "$2" ] && [ "$s" -le $(($2 * {MAX_PARTS})) ]; then '
                   '{ split -b "$2" --filter=md5sum -- "$1" 2>/dev/null | sed "s/^/part:/"; } & p=$!; fi; '
                   'h=$(md5sum -- "$1" & m=$!; sha256sum -- "$1" || exit 1; wait "$m" || exit 1) || exit 1; '
                   '[ -z "$p" ] || wait "$p"; printf "%s\\n" "$s" "$h"')  # dash's echo would read the backslashes
CHECKSUM_FIELDS = ("image_file_size", "image_file_md5", "image_file_sha256")
PART_FIELDS = ("image_file_part_size", "image_file_part_md5s")  # recorded where the file has several parts
RECORDED_PART_SIZE = DEFAULT_PART_SIZE_MB * MIB


def checksum_command(path: str, part_size: int = RECORDED_PART_SIZE) -> list[str]:
    """One command for the site host: the size, md5 and sha256 of the file at `path`, and its parts' md5s."""
    return ["sh", "-c", CHECKSUM_SCRIPT, "file-checksums", path, str(part_size)]


def parse_checksums(stdout: str, part_size: int = RECORDED_PART_SIZE) -> dict[str, Any]:
    """`checksum_command`'s output as result.json's fields; a line that is not what it should be is an error
    (but for the parts' md5s, which are left out unless every one is there)."""
    words = [line.split()[0].lstrip("\\") for line in stdout.splitlines() if line.strip()]
    parts = [word[len("part:"):].lower() for word in words if word.startswith("part:")]
    lines = [word for word in words if not word.startswith("part:")]
    hashes = {len(value): value.lower() for value in lines[1:]}
    if len(lines) != 3 or not lines[0].isdigit() or set(hashes) != {32, 64} \
            or any(c not in "0123456789abcdef" for c in hashes[32] + hashes[64]):
        raise SiteError(f"the checksums of the image file could not be read from {stdout.strip()[:200]!r}; are "
                        "coreutils' md5sum, sha256sum and stat on the site host?")
    size = int(lines[0])
    recorded: dict[str, Any] = {"image_file_size": size, "image_file_md5": hashes[32],
                                "image_file_sha256": hashes[64]}
    if parts and len(parts) == parts_in(size, part_size) and all(
            len(part) == 32 and all(c in "0123456789abcdef" for c in part) for part in parts):
        recorded.update({"image_file_part_size": part_size, "image_file_part_md5s": parts})
    return recorded


def file_checksums(host: Host, path: str) -> dict[str, Any]:
    """The size, md5 and sha256 of the converted file, read on the site host (nothing crosses the network);
    nothing for an image that is not one regular file (publishing then hashes it itself)."""
    result = host.run(checksum_command(path), check=False)
    if result.returncode == 3:
        return {}
    if not result.ok:
        raise SiteError(f"computing the checksums of {path} on {host.name} failed: "
                        f"{(result.stderr.strip() or result.stdout.strip())[-300:]}")
    return parse_checksums(result.stdout)


class ConvertStep(ChainStep):
    name = "convert"
    resource = "convert"

    def run(self) -> StepResult:
        chain = self.chain
        services = chain.site_services
        if chain.reference is None:
            raise SiteError("nothing to convert: the transfer step left no registry reference")
        assert chain.image_file is not None
        output = chain.image_file
        if services.site.host.exists(output):  # converted by an attempt killed before it recorded its checksums
            return StepResult(f"{posixpath.basename(output)} (already converted)",
                              {"image_file": output, **file_checksums(services.site.host, output)})
        source = ImageSource.registry(chain.reference, insecure=services.registry.settings.insecure)
        if services.convert_job is not None:
            return self._as_job(source, output, services.convert_job)
        host = services.site.host
        # Each attempt converts in a folder of its own beside the staged one (which is what gets promoted):
        # a conversion orphaned by a killed run (its ch-convert or mksquashfs lives on) keeps writing there
        # and never meets this attempt's scratch files; the finished file is renamed into place.
        attempt = posixpath.join(posixpath.dirname(chain.staging), f".convert-{uuid.uuid4().hex[:12]}")
        partial = posixpath.join(attempt, posixpath.basename(output))
        try:
            services.engine.convert(host, source, partial, credentials=services.registry.credentials())
            host.run(["mkdir", "-p", chain.staging])
            host.run(["mv", "-f", partial, output])
        finally:
            host.run(["rm", "-rf", attempt], check=False)
        return StepResult(posixpath.basename(output), {"image_file": output, **file_checksums(host, output)})

    def _as_job(self, source: ImageSource, output: str, resources: Resources) -> StepResult:
        """Convert on a compute node: submit (or adopt) the conversion job, wait, check the file."""
        chain = self.chain
        services = chain.site_services
        host = services.site.host
        name = job_name(services.job_prefix, chain.run.run_id, chain.image.name, "convert", arch=chain.image.spec.arch)
        log = posixpath.join(chain.staging, "logs", "convert.out")
        existing = [status for status in services.scheduler.find(name) if status.name == name]
        if existing:
            job_id = existing[0].job_id
        else:
            host.run(["mkdir", "-p", posixpath.join(chain.staging, "logs")])
            services.engine.prepare(host, source, f"{output}.part")
            script_path = posixpath.join(chain.staging, "convert.job.sh")
            job = JobSpec(name=name, workdir=chain.staging, output=log, script_path=script_path, resources=resources,
                          account=services.account, partition=services.partition_for(chain.image.spec.arch))
            host.write_text(script_path, render_conversion_script(
                engine=services.engine, source=source, output=output, header=services.scheduler.directives(job)),
                mode=0o755)
            job_id = services.scheduler.submit(job)
        status = wait_for_job(services, job_id, chain.cancel)
        services.engine.cleanup(host, f"{output}.part")  # helpers staged by prepare(), a part left by a kill
        if never_starts(status):
            raise SiteError(f"conversion job {job_id} can never start as submitted ({status.reason}); "
                            "ask for less in ci.site.convert_job or choose another partition")
        if not host.exists(output):
            tail = " / ".join(host.read_text(log).splitlines()[-3:]) if host.exists(log) else ""
            raise SiteError(f"conversion job {status.describe()} left no {posixpath.basename(output)}; "
                            f"see {log} on {host.name}" + (f": {tail}" if tail else ""))
        return StepResult(f"{posixpath.basename(output)} (job {job_id})",
                          {"image_file": output, "job_id": job_id, **file_checksums(host, output)})

    def absorb(self, data: Mapping[str, Any]) -> None:
        self.chain.image_file = data.get("image_file")
        # an attempt of this run made before checksums were recorded has none: promotion then records none
        self.chain.image_file_checksums = {key: data[key] for key in CHECKSUM_FIELDS + PART_FIELDS if key in data} \
            if all(key in data for key in CHECKSUM_FIELDS) else {}
