"""Node-local work: each runner job works in `<node_tmp>/runner-<node>-<job>`, removed when it ends.

The shared home is the wrong place for a CI job's checkout, build trees and Docker data (slow,
quota'd, and two jobs of one runner folder would share `_work`). So the job script makes a 0700
folder on the node's local disk, named after the node and the Slurm job, points the runner's work
folder there and removes it on every way out: normal end, `scancel` and the time limit (Slurm sends
SIGTERM, then SIGKILL after KillWait; the script's trap runs on the first). A node that died
mid-job cannot clean up, so each job first sweeps this node's folders of jobs Slurm no longer
runs (only folders owned by the job's own user, and only when Slurm answers at all).

The runner learns its work folder from its just-in-time config, written before Slurm gives the job
an id; the config therefore names `<node_tmp>/<runner>.work`, a symbolic link that the job points
at its own folder (and refuses to run when someone else owns that name: runner names are public).

Everything here renders bash (pure); `jobs.job_script` assembles the pieces.
"""

from __future__ import annotations

import posixpath
import shlex

from ci.config.runners import RunnersSettings

UNSERVABLE_EXIT = 78  # EX_CONFIG: the node lacks what the target needs; the allocator marks the target
UNSERVABLE_MARK = "ci-runner-unservable:"  # first word of the log line that says what is missing
SETUP_EXIT = 6  # the job could not set itself up (work folder, daemon start); an ordinary failure


def work_link(settings: RunnersSettings, runner: str) -> str:
    """The runner's work folder as its JIT config names it (a link the job points at its own folder).

    An absolute `work_folder` is the operator's choice and is used as it is.
    """
    if settings.work_folder.startswith("/"):
        return settings.work_folder
    return posixpath.join(settings.node_tmp, f"{runner}.work")


def functions(settings: RunnersSettings, runner: str) -> str:
    """Bash: variables and functions of the node-local folder (defines ci_cleanup_folder, ci_sweep)."""
    node_tmp = shlex.quote(settings.node_tmp)
    absolute = settings.work_folder.startswith("/")
    link = "''" if absolute else shlex.quote(work_link(settings, runner))
    relative_work = "work" if absolute else settings.work_folder
    return f"""# ---- node-local work folder (ci/runners/nodework.py) ----
ci_node=${{SLURMD_NODENAME:-$(hostname -s 2>/dev/null || hostname)}}  # Slurm's name of the node
ci_job=${{SLURM_JOB_ID:-pid$$}}
ci_user=$(id -un)
CI_RUNNER_JOB_DIR={node_tmp}/runner-"$ci_node"-"$ci_job"
export CI_RUNNER_JOB_DIR
ci_work_link={link}
ci_work="$CI_RUNNER_JOB_DIR"/{shlex.quote(relative_work)}
ci_log() {{ echo "runner {runner}: $*"; }}
ci_now() {{ date +%s.%N; }}
ci_seconds_since() {{ awk -v a="$1" -v b="$(ci_now)" 'BEGIN {{ printf "%.1f", b - a }}'; }}
ci_unservable() {{
    echo "{UNSERVABLE_MARK} node $ci_node cannot serve this target for user $ci_user: $*" >&2
    exit {UNSERVABLE_EXIT}
}}
ci_remove() {{
    # Image layers hold files of subordinate ids that only a user namespace may delete.
    [ -e "$1" ] || [ -L "$1" ] || return 0
    chmod -R u+rwX -- "$1" 2>/dev/null
    rm -rf -- "$1" 2>/dev/null
    if [ -e "$1" ] && command -v rootlesskit >/dev/null 2>&1; then
        rootlesskit --net=host rm -rf -- "$1" >/dev/null 2>&1
    fi
    if [ -e "$1" ] && command -v podman >/dev/null 2>&1; then
        podman unshare rm -rf -- "$1" >/dev/null 2>&1
    fi
    [ ! -e "$1" ]
}}
ci_sweep() {{
    # Folders of this node's jobs that Slurm no longer runs (a node failure left them); ours only.
    command -v squeue >/dev/null 2>&1 || return 0
    [ -n "${{SLURM_JOB_ID:-}}" ] || return 0
    squeue -h -j "$SLURM_JOB_ID" -o %i >/dev/null 2>&1 || return 0  # Slurm does not answer: keep all
    for ci_old in {node_tmp}/runner-"$ci_node"-*; do
        [ -d "$ci_old" ] && [ -O "$ci_old" ] || continue
        ci_old_job=${{ci_old##*-}}
        case "$ci_old_job" in ''|*[!0-9]*) continue ;; esac
        [ "$ci_old_job" = "$ci_job" ] && continue
        case "$(squeue -h -j "$ci_old_job" -o %T 2>/dev/null)" in
            PENDING|RUNNING|SUSPENDED|COMPLETING|CONFIGURING|RESIZING|STOPPED|SIGNALING) continue ;;
        esac
        ci_remove "$ci_old" && ci_log "removed $ci_old, left by job $ci_old_job"
    done
}}
ci_make_folder() {{
    umask 077
    mkdir -p -- {node_tmp} 2>/dev/null
    ci_remove "$CI_RUNNER_JOB_DIR"
    if ! mkdir -m 700 -- "$CI_RUNNER_JOB_DIR" || [ -L "$CI_RUNNER_JOB_DIR" ] || ! [ -O "$CI_RUNNER_JOB_DIR" ]; then
        echo "runner {runner}: cannot make $CI_RUNNER_JOB_DIR on $ci_node (is {node_tmp} there and writable?)" >&2
        exit {SETUP_EXIT}
    fi
    mkdir -p -- "$ci_work" || exit {SETUP_EXIT}
    if [ -n "$ci_work_link" ]; then
        rm -f -- "$ci_work_link" 2>/dev/null
        if ! ln -s -- "$ci_work" "$ci_work_link" 2>/dev/null || ! [ -O "$ci_work_link" ] \\
                || [ "$(readlink -- "$ci_work_link")" != "$ci_work" ]; then
            echo "runner {runner}: $ci_work_link belongs to someone else; not running there" >&2
            ci_work_link=""
            exit {SETUP_EXIT}
        fi
    fi
    ci_log "works in $CI_RUNNER_JOB_DIR on $ci_node"
}}
ci_cleanup_folder() {{
    if [ -n "$ci_work_link" ] && [ -L "$ci_work_link" ] && [ -O "$ci_work_link" ]; then
        rm -f -- "$ci_work_link"
    fi
    ci_remove "$CI_RUNNER_JOB_DIR" || echo "runner {runner}: could not remove $CI_RUNNER_JOB_DIR" >&2
}}
"""
