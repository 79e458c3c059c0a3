"""One runner = one batch job: its names, its job script, and where its JIT config waits.

Names encode everything a restart needs to adopt a job it finds in squeue:
runner `<prefix>-<target>-<8 hex>`, job `<prefix>.<target>.<runner>`.

The just-in-time config is a secret (it lets anyone register as our runner). It is written to
`<job_dir>/jit/<runner>.jit`, mode 0600, in a 0700 folder; the job script reads it into
`ACTIONS_RUNNER_INPUT_JITCONFIG` (the variable the Actions runner reads for `--jitconfig`),
deletes the file and starts the runner command. So it never appears in argv, in the job script,
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
from ci.runners import imagecache, jobdocker, nodework
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


JOB_DIR_MARK = "__CI_RUNNER_JOB_DIR__"


def runner_command(settings: RunnersSettings, target: Target | None = None) -> str:
    """The shell words that start the runner (inside the configured image, when there is one).

    In an image, the image is the node-local copy `$CI_RUNNER_IMAGE` (imagecache); a Docker-engine
    runner of a target with its own daemon gets the job's folder mounted at the same path and
    `DOCKER_HOST`, so the containers it starts run in the job's daemon and see the same paths.
    """
    if settings.container is None:
        return settings.runner_command
    container = settings.container
    binds = [Bind(part.split(":", 1)[0], part.split(":", 1)[-1]) for part in container.binds]
    pass_env = [JIT_VARIABLE]
    if container.engine == "docker":
        binds.append(Bind(JOB_DIR_MARK, JOB_DIR_MARK))
        if target is not None and target.docker is not None:
            pass_env.append("DOCKER_HOST")
    engine = make_engine(container.engine)
    argv = engine.exec_command(imagecache.PLACEHOLDER, ["sh", "-c", settings.runner_command], binds,
                               pass_env=pass_env)
    words = []
    for word in argv:
        if shlex.quote(word) == word:  # a plain word: the job's shell expands the variables
            words.append(word.replace(imagecache.PLACEHOLDER, '"$CI_RUNNER_IMAGE"')
                         .replace(JOB_DIR_MARK, '"$CI_RUNNER_JOB_DIR"'))
        else:  # a script for an inner shell: that shell expands them (both are exported)
            words.append(shlex.quote(word.replace(imagecache.PLACEHOLDER, '"$CI_RUNNER_IMAGE"')
                                     .replace(JOB_DIR_MARK, '"$CI_RUNNER_JOB_DIR"')))
    return " ".join(words)


def runner_exec_line(settings: RunnersSettings, target: Target | None = None) -> str:
    """The runner's command as one `exec` line (what a job without node-local clean-up would run)."""
    return f"exec {runner_command(settings, target)}"


def job_script(settings: RunnersSettings, target: Target, runner: str, jit_file: str,
               image: imagecache.ImageDigest | None = None) -> str:
    """The batch script: JIT config from its file, the node-local folder, the job's own Docker daemon
    (when the target has one), the runner image from the node's cache (when there is one), the runner.

    The runner runs in the background and the script waits for it, so that SIGTERM (scancel, the time
    limit) reaches the trap, which stops the daemon and removes the folder before Slurm's SIGKILL.
    """
    runner_dir = settings.runner_dir  # `~/` is the home of the user the job runs as
    cd = f'cd "$HOME"/{shlex.quote(runner_dir[2:])}' if runner_dir.startswith("~/") else f"cd {shlex.quote(runner_dir)}"
    if settings.container is not None and image is None:
        raise ValueError("a runner image needs its digest (imagecache.Digests.resolve)")
    cache = imagecache.fetch(settings, image) + "export CI_RUNNER_IMAGE=\"$ci_image\"\n" if image else ""
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
{nodework.functions(settings, runner)}ci_runner_pid=""
ci_cleanup() {{
    trap - EXIT TERM INT HUP
    if [ -n "$ci_runner_pid" ] && kill -0 "$ci_runner_pid" 2>/dev/null; then
        kill -TERM "$ci_runner_pid" 2>/dev/null
        ci_tries=0
        while kill -0 "$ci_runner_pid" 2>/dev/null && [ "$ci_tries" -lt 10 ]; do
            sleep 0.1; ci_tries=$((ci_tries + 1))
        done
    fi
    ci_docker_stop
    ci_cleanup_folder
}}
ci_docker_stop() {{ :; }}
trap ci_cleanup EXIT
trap 'exit 143' TERM INT HUP
ci_sweep
ci_make_folder
{jobdocker.daemon(target.docker)}{cache}{cd} || exit 4
echo "runner {runner} starting on $(hostname) in $PWD"
{runner_command(settings, target)} &
ci_runner_pid=$!
wait "$ci_runner_pid"
ci_status=$?
ci_runner_pid=""
exit "$ci_status"
"""


def job_spec(settings: RunnersSettings, target: Target, runner: str, job_dir: str,
             account: str | None = None, partition: str | None = None,
             image: imagecache.ImageDigest | None = None) -> JobSpec:
    """The batch job of one runner; `partition` is the site's default (the target's own wins)."""
    return JobSpec(
        name=job_name(settings.prefix, target.name, runner),
        workdir=posixpath.join(job_dir, "work"),
        output=posixpath.join(job_dir, "logs", f"{runner}.out"),
        script=job_script(settings, target, runner, jit_path(job_dir, runner), image),
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
