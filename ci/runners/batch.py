"""One runner = one batch job: its names, its job script, and where its JIT config waits.

Names encode everything a restart needs to adopt a job it finds in squeue:
runner `<prefix>-<target>-<8 hex>`, job `<prefix>.<target>.<runner>`.

The just-in-time config is a secret (it lets anyone register as our runner). It is written to
`<job_dir>/jit/<runner>.jit`, mode 0600, in a 0700 folder; the job script reads it into
`ACTIONS_RUNNER_INPUT_JITCONFIG` (the variable the Actions runner reads for `--jitconfig`),
deletes the file and execs the runner command. So it never appears in argv, in the job script,
in sbatch's environment or Slurm's spool, and it is gone from disk once the runner started.
"""

from __future__ import annotations

import posixpath
import re
import secrets
import shlex
from dataclasses import replace

from ci.config.runners import RunnersSettings, Target
from ci.engines import Bind, make_engine
from ci.resources import Resources
from ci.schedulers import JobSpec

JIT_VARIABLE = "ACTIONS_RUNNER_INPUT_JITCONFIG"


def runner_name(prefix: str, target: str) -> str:
    return f"{prefix}-{target}-{secrets.token_hex(4)}"


def job_name(prefix: str, target: str, runner: str) -> str:
    return f"{prefix}.{target}.{runner}"


def parse_job_name(prefix: str, name: str) -> tuple[str, str] | None:
    """(target, runner) of one of our job names, None for anything else."""
    match = re.fullmatch(rf"{re.escape(prefix)}\.([a-z0-9][a-z0-9_-]{{0,31}})\.({re.escape(prefix)}-\1-[0-9a-f]{{8}})",
                         name)
    return (match.group(1), match.group(2)) if match else None


def jit_folder(job_dir: str) -> str:
    return posixpath.join(job_dir, "jit")


def jit_path(job_dir: str, runner: str) -> str:
    return posixpath.join(jit_folder(job_dir), f"{runner}.jit")


def resources(target: Target) -> Resources:
    """The target's request in the scheduler layer's terms: one task with `cpus` cores."""
    return target.slurm.resources()


def runner_exec_line(settings: RunnersSettings) -> str:
    """The shell line that starts the runner (inside the configured image, when there is one)."""
    if settings.container is None:
        return f"exec {settings.runner_command}"
    container = settings.container
    binds = [Bind(part.split(":", 1)[0], part.split(":", 1)[-1]) for part in container.binds]
    engine = make_engine(container.engine)
    argv = engine.exec_command(container.image, ["sh", "-c", settings.runner_command], binds,
                               pass_env=[JIT_VARIABLE])
    return f"exec {shlex.join(argv)}"


def job_script(settings: RunnersSettings, target: Target, runner: str, jit_file: str) -> str:
    runner_dir = settings.runner_dir  # `~/` is the home of the user the job runs as
    cd = f'cd "$HOME"/{shlex.quote(runner_dir[2:])}' if runner_dir.startswith("~/") else f"cd {shlex.quote(runner_dir)}"
    return f"""#!/bin/bash
# GitHub Actions runner {runner} (target {target.name}, labels {",".join(target.labels)}),
# started by the containers-ci runner allocator. Its just-in-time config waits in a 0600 file
# that only this job reads; the file is removed as soon as it is read.
set -u
jit={shlex.quote(jit_file)}
if [ ! -r "$jit" ]; then
    echo "runner {runner}: its config $jit is gone (already used, or withdrawn by the allocator)" >&2
    exit 3
fi
{JIT_VARIABLE}=$(cat "$jit") || exit 3
rm -f "$jit"
export {JIT_VARIABLE}
{cd} || exit 4
echo "runner {runner} starting on $(hostname) in $PWD"
{runner_exec_line(settings)}
"""


def job_spec(settings: RunnersSettings, target: Target, runner: str, job_dir: str,
             account: str | None = None, partition: str | None = None) -> JobSpec:
    """The batch job of one runner; `partition` is the site's default (the target's own wins)."""
    return JobSpec(
        name=job_name(settings.prefix, target.name, runner),
        workdir=posixpath.join(job_dir, "work"),
        output=posixpath.join(job_dir, "logs", f"{runner}.out"),
        script=job_script(settings, target, runner, jit_path(job_dir, runner)),
        resources=resources(target),
        account=account,
        partition=partition,
    )


def with_directives(spec: JobSpec, directives: list[str]) -> JobSpec:
    """The job script with the scheduler's own header (`#SBATCH ...`) after its first line, so the
    script in job_dir/work/ says what it asked for (sbatch is given the same options)."""
    if not directives or spec.script is None:
        return spec
    first, _, rest = spec.script.partition("\n")
    return replace(spec, script="\n".join([first, *directives, rest]))
