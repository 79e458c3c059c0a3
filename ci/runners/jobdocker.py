"""A private Docker daemon inside each runner job (`ci.runners.targets[].docker: rootless | podman`).

Most CI jobs run `docker build` and `docker run`. A shared daemon on a compute node would hand
every job root on the node (its socket is root), so each job starts its own daemon as the job's
user, inside a user namespace (rootless mode):

- `rootless`: Debian's `dockerd-rootless.sh` (package docker.io) under `rootlesskit` with
  `slirp4netns` networking and `newuidmap`/`newgidmap` (package uidmap) for the subordinate ids.
  `--pidns` puts the daemon, containerd, the shims and every container into one PID namespace, so
  nothing escapes Slurm's process tracking: when the namespace's first process dies, the kernel
  kills the rest (containerd's shims re-parent to it, not to the node's init).
- `podman`: Podman's Docker-compatible API (`podman system service`), for sites that prefer it.

Data, socket and runtime folders live in the job's node-local folder (`nodework`), so two jobs on
one node never see each other's images or containers, and `DOCKER_HOST` is handed to the runner
(its containers can mount the socket: it is the job user's, not root's). Before starting, the job
checks what rootless mode needs (the tools, subordinate uid and gid ranges for the user, user
namespaces, /dev/net/tun for slirp4netns) and, if something is missing, fails at once with exit
78 and one line naming it; the allocator then marks the target as not servable.

Everything here renders bash (pure); `batch.job_script` assembles the pieces.
"""

from __future__ import annotations

from ci.runners.nodework import SETUP_EXIT

DAEMON_WAIT = 60  # seconds a daemon may take to answer on its socket
PODMAN_RUNROOT_MAX = 50  # Podman 4 refuses a longer --runroot ("the specified runroot is longer than 50 characters")
STOP_WAIT = 30  # tenths of a second between SIGTERM and SIGKILL when the job ends (Slurm's KillWait is short)
ROOTLESS_SCRIPTS = ("dockerd-rootless.sh", "/usr/share/docker.io/contrib/dockerd-rootless.sh",
                    "/usr/share/docker/contrib/dockerd-rootless.sh", "/usr/bin/dockerd-rootless.sh")

_CHECKS = """case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin" ;; esac  # dockerd is in sbin
ci_docker_missing=""
ci_need() {{ command -v "$1" >/dev/null 2>&1 || ci_docker_missing="$ci_docker_missing $1"; }}
for ci_tool in {tools}; do ci_need "$ci_tool"; done
[ -z "$ci_docker_missing" ] || ci_unservable "missing tools:$ci_docker_missing ({install})"
ci_has_subids() {{  # $1: subuid or subgid
    if command -v getsubids >/dev/null 2>&1; then
        if [ "$1" = subgid ]; then getsubids -g "$ci_user" 2>/dev/null | grep -q .
        else getsubids "$ci_user" 2>/dev/null | grep -q .; fi
    else
        grep -Eq "^($ci_user|$(id -u)):[0-9]+:[0-9]+" "/etc/$1" 2>/dev/null
    fi
}}
for ci_ids in subuid subgid; do
    ci_has_subids "$ci_ids" || ci_unservable "no subordinate ${{ci_ids#sub}} range for $ci_user in /etc/$ci_ids" \
        "(add a line $ci_user:100000:65536; docs/runners-docker.md)"
done
unshare --user --map-root-user true >/dev/null 2>&1 || ci_unservable "unprivileged user namespaces are disabled" \
    "(sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone)"
"""

_TUN = """[ -r /dev/net/tun ] && [ -w /dev/net/tun ] || ci_unservable "/dev/net/tun is not readable and writable by" \\
    "$ci_user (slirp4netns needs it; udev makes it 0666)"
"""

_WAIT = """    export DOCKER_HOST="unix://$ci_docker_dir/run/docker.sock"
    ci_deadline=$((SECONDS + {wait}))
    # The socket appears when the daemon is nearly up: wait for it with the shell's own test (a client
    # started 20 times a second would take CPU from the daemon's start), then ask the daemon itself.
    until [ -S "$ci_docker_dir/run/docker.sock" ] && docker version >/dev/null 2>&1; do
        if ! kill -0 "$ci_daemon_pid" 2>/dev/null; then
            echo "runner $ci_node: the {what} did not start; its log ends with:" >&2
            tail -n 20 "$ci_docker_dir/daemon.log" >&2
            exit {setup_exit}
        fi
        if [ "$SECONDS" -ge "$ci_deadline" ]; then
            echo "the {what} did not answer on $DOCKER_HOST within {wait}s; its log ends with:" >&2
            tail -n 20 "$ci_docker_dir/daemon.log" >&2
            exit {setup_exit}
        fi
        if [ -S "$ci_docker_dir/run/docker.sock" ]; then sleep 0.1; else sleep 0.02; fi
    done
    ci_log "{what} ready on $DOCKER_HOST after $(ci_seconds_since "$ci_daemon_started")s"
"""

_STOP = """ci_docker_stop() {{
    [ -n "$ci_daemon_pid" ] || return 0
{first}    kill -TERM "$ci_daemon_pid" 2>/dev/null
    ci_tries=0
    while kill -0 "$ci_daemon_pid" 2>/dev/null && [ "$ci_tries" -lt {stop} ]; do
        sleep 0.1; ci_tries=$((ci_tries + 1))
    done
    kill -KILL "$ci_daemon_pid" 2>/dev/null
    wait "$ci_daemon_pid" 2>/dev/null
    ci_daemon_pid=""
{extra}}}
"""


# Nothing of a finished job's daemon is worth a graceful shutdown (its data is deleted next): SIGKILL
# to rootlesskit's child, the first process of the PID namespace, ends the daemon, containerd, the
# shims and every container at once; rootlesskit and slirp4netns then exit by themselves.
_KILL_NAMESPACE = """    pkill -KILL -P "$ci_daemon_pid" -f -- '--pidns' 2>/dev/null
"""


def rootless(kill_wait_tenths: int = STOP_WAIT) -> str:
    """Bash: check the node, then start `dockerd-rootless.sh` in the job folder (defines ci_docker_stop)."""
    scripts = " ".join(ROOTLESS_SCRIPTS)
    checks = _CHECKS.format(tools="rootlesskit slirp4netns newuidmap newgidmap dockerd docker unshare",
                            install="Debian: apt install docker.io rootlesskit slirp4netns uidmap")
    wait = _WAIT.format(what="rootless Docker daemon", setup_exit=SETUP_EXIT, wait=DAEMON_WAIT)
    return f"""# ---- private rootless Docker daemon (ci/runners/jobdocker.py) ----
ci_daemon_pid=""
{checks}{_TUN}ci_rootless_script=""
for ci_candidate in {scripts}; do
    if command -v "$ci_candidate" >/dev/null 2>&1; then ci_rootless_script=$(command -v "$ci_candidate"); break; fi
done
[ -n "$ci_rootless_script" ] || ci_unservable "dockerd-rootless.sh is missing" \\
    "(Debian's docker.io ships it in /usr/share/docker.io/contrib/)"
{_STOP.format(stop=kill_wait_tenths, extra="", first=_KILL_NAMESPACE)}ci_docker_start() {{
    ci_docker_dir="$CI_RUNNER_JOB_DIR/docker"
    mkdir -p -m 700 "$ci_docker_dir/run" "$ci_docker_dir/data" "$ci_docker_dir/config" || exit {SETUP_EXIT}
    ci_daemon_started=$(ci_now)
    (
        unset ACTIONS_RUNNER_INPUT_JITCONFIG
        export XDG_RUNTIME_DIR="$ci_docker_dir/run" XDG_DATA_HOME="$ci_docker_dir/data" \\
            XDG_CONFIG_HOME="$ci_docker_dir/config" HOME="$ci_docker_dir"
        export DOCKERD_ROOTLESS_ROOTLESSKIT_FLAGS="--pidns --state-dir=$ci_docker_dir/rootlesskit"
        exec "$ci_rootless_script" --data-root "$ci_docker_dir/data/docker" --exec-root "$ci_docker_dir/run/docker" \\
            --pidfile "$ci_docker_dir/run/docker.pid" --host "unix://$ci_docker_dir/run/docker.sock" \\
            --shutdown-timeout 2
    ) >"$ci_docker_dir/daemon.log" 2>&1 </dev/null &
    ci_daemon_pid=$!
{wait}}}
ci_docker_start
"""


def podman(kill_wait_tenths: int = STOP_WAIT) -> str:
    """Bash: check the node, then serve Podman's Docker API from the job folder (defines ci_docker_stop).

    Podman's `conmon` leaves the process tree by design, so stopping also stops and removes every
    container of this job's storage and ends whatever process still names the job's folder.
    """
    checks = _CHECKS.format(tools="podman newuidmap newgidmap slirp4netns unshare",
                            install="Debian: apt install podman uidmap slirp4netns")
    wait = _WAIT.format(what="Podman API service", setup_exit=SETUP_EXIT, wait=DAEMON_WAIT)
    wait = wait.replace("docker version", "ci_podman_answers")
    storage = ('--root "$ci_docker_dir/data" --runroot "$ci_podman_runroot" '
               '--tmpdir "$ci_docker_dir/run/tmp"')
    extra = f"""    (
        export XDG_RUNTIME_DIR="$ci_docker_dir/run" XDG_CONFIG_HOME="$ci_docker_dir/config" HOME="$ci_docker_dir"
        podman {storage} stop --all --time 1 >/dev/null 2>&1
        podman {storage} rm --all --force >/dev/null 2>&1
    )
    # conmon, its containers and Podman's pause process (which holds the user namespace) left the
    # tree: end every process of ours that names the job's folder in its command line or environment.
    for ci_proc in /proc/[0-9]*; do
        [ -O "$ci_proc" ] && [ "${{ci_proc#/proc/}}" != "$$" ] || continue
        if cat "$ci_proc/cmdline" "$ci_proc/environ" 2>/dev/null | tr '\\0' '\\n' \\
                | grep -qF -e "$ci_docker_dir" -e "${{ci_podman_runroot:-$ci_docker_dir}}"; then
            kill -KILL "${{ci_proc#/proc/}}" 2>/dev/null
        fi
    done
    case "$ci_podman_runroot" in
        ""|"$ci_docker_dir"/*) ;;  # goes with the job's folder
        *) ci_remove "$ci_podman_runroot" || echo "runner $ci_node: could not remove $ci_podman_runroot" >&2 ;;
    esac
"""
    return f"""# ---- private Podman service with the Docker API (ci/runners/jobdocker.py) ----
ci_daemon_pid=""
ci_podman_runroot=""
{checks}{_TUN}ci_podman_answers() {{
    command -v curl >/dev/null 2>&1 || {{ [ -S "$ci_docker_dir/run/docker.sock" ]; return; }}
    curl -fsS --unix-socket "$ci_docker_dir/run/docker.sock" http://d/_ping >/dev/null 2>&1
}}
{_STOP.format(stop=kill_wait_tenths, extra=extra, first="")}ci_docker_start() {{
    ci_docker_dir="$CI_RUNNER_JOB_DIR/docker"
    mkdir -p -m 700 "$ci_docker_dir/run/tmp" "$ci_docker_dir/data" "$ci_docker_dir/config" || exit {SETUP_EXIT}
    ci_podman_runroot="$ci_docker_dir/run/storage"
    if [ "${{#ci_podman_runroot}}" -gt {PODMAN_RUNROOT_MAX} ]; then
        # Podman refuses a run root longer than {PODMAN_RUNROOT_MAX} characters (its sockets live there), and a
        # job folder on a real node (node_tmp, node name, job id) is longer: a private one in /tmp.
        ci_podman_runroot=$(mktemp -d /tmp/ci-podman.XXXXXX) || {{
            echo "runner $ci_node: cannot make Podman's run root in /tmp (Podman needs a path of at most" \\
                "{PODMAN_RUNROOT_MAX} characters)" >&2
            exit {SETUP_EXIT}
        }}
    fi
    ci_daemon_started=$(ci_now)
    (
        unset ACTIONS_RUNNER_INPUT_JITCONFIG
        export XDG_RUNTIME_DIR="$ci_docker_dir/run" XDG_CONFIG_HOME="$ci_docker_dir/config" HOME="$ci_docker_dir"
        exec podman {storage} system service --time=0 "unix://$ci_docker_dir/run/docker.sock"
    ) >"$ci_docker_dir/daemon.log" 2>&1 </dev/null &
    ci_daemon_pid=$!
{wait}}}
ci_docker_start
"""


def daemon(kind: str | None) -> str:
    """The bash of a target's `docker` setting; empty when the target runs no daemon."""
    if kind == "rootless":
        return rootless()
    if kind == "podman":
        return podman()
    return ""
