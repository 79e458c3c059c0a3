"""Runner jobs with their own rootless Docker daemon, node-local folders and the per-node image cache.

Real Slurm, real rootless Docker (Debian's dockerd-rootless.sh under rootlesskit), a real
unprivileged job user (`ci-runner`, made by `inv local.up`), the emulated GitHub. The allocator
submits as that user through the loopback sshd. No registry is reachable from a job's daemon, so
each job makes its base image itself: Debian's static busybox in a scratch image (`docker import`).
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ci.config.runners import parse_runners
from ci.config.settings import SSHSettings
from ci.hosts import SSHHost
from ci.local import services as local
from ci.runners import batch as jobs
from ci.runners import control, imagecache
from ci.schedulers import JobState, SlurmScheduler
from tests.github_emulator import TOKEN, Emulator, wait_for
from tests.github_emulator.jobuser import (
    JobUserSite,
    job_user_settings,
    job_user_site,
    leftovers,
    user_processes,
)
from tests.github_emulator.testing import cancel_all, our_jobs, serving, unique_prefix
from tests.support.services import require_slurm, require_sshd, unmet

pytestmark = pytest.mark.slurm

JOBCOMP = Path("/var/log/containers-ci/slurm-jobcomp.log")
LABELS = ["self-hosted", "slurm", "docker"]


@pytest.fixture(autouse=True)
def services(monkeypatch: pytest.MonkeyPatch) -> None:
    require_slurm()
    require_sshd()
    if not local.rootless_ready():
        unmet(f"the job user {local.RUNNER_USER} with subordinate ids and the rootless tools is not set up here; "
              "`inv local.up` makes it")
    monkeypatch.setenv("CI_GITHUB_TOKEN", TOKEN)


@pytest.fixture
def site() -> Iterator[JobUserSite]:
    prefix = unique_prefix()
    try:
        with job_user_site(prefix) as made:
            yield made
    finally:
        cancel_all(prefix)


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with Emulator() as running:
        yield running


def docker_target(name: str, labels: list[str], **slurm: object) -> dict[str, object]:
    return {"name": name, "labels": labels, "docker": "rootless", "max": 4, "idle_timeout": 2,
            "slurm": {"cpus": 1, "mem": "500M", "time": "00:05:00", **slurm}}


def base_image_steps(tag: str) -> list[str]:
    """Steps that make a base image from Debian's static busybox (no registry), build FROM it, run it."""
    return [
        f"rm -rf base && mkdir -p base/bin && cp /bin/busybox base/bin/ && ln -s busybox base/bin/sh"
        f" && tar -C base -c . | docker import - local/base:{tag}",
        f"printf 'FROM local/base:{tag}\\nRUN echo built-as-$(id -u) > /built\\n"
        f"CMD [\"/bin/busybox\", \"cat\", \"/built\"]\\n' > Dockerfile && docker build -q -t job/{tag} .",
        f"docker run --rm job/{tag} | tee run.out && grep -q built-as-0 run.out",
    ]


def jobcomp(prefix: str) -> dict[str, str]:
    """Runner job name -> final state, from Slurm's job completion log."""
    if not JOBCOMP.exists():
        return {}
    states = {}
    for line in JOBCOMP.read_text(errors="replace").splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        if fields.get("Name", "").startswith(f"{prefix}."):
            states[fields["Name"].rsplit(".", 1)[1]] = fields.get("JobState", "")
    return states


def assert_nothing_left(site: JobUserSite) -> None:
    wait_for(lambda: not user_processes(site.node_tmp), 30, "no process of the jobs' daemons left")
    assert leftovers(site.node_tmp) == []


@pytest.mark.parametrize("daemon", ["rootless", "podman"])
def test_a_job_builds_and_runs_an_image_in_its_own_daemon_and_two_jobs_do_not_see_each_other(
        emulator: Emulator, site: JobUserSite, tmp_path: Path, daemon: str) -> None:
    evidence = site.root / "evidence"
    steps = {}
    for me, other in (("one", "two"), ("two", "one")):
        steps[me] = [*base_image_steps(me),
                     f"docker run -d job/{me} /bin/busybox sleep 600",  # still running when the job ends
                     # both jobs' images exist at once: each waits for the other's, then looks for it
                     f"touch {evidence}/{me}.built; i=0; while [ ! -e {evidence}/{other}.built ] && [ $i -lt 600 ];"
                     f" do sleep 0.1; i=$((i+1)); done; [ -e {evidence}/{other}.built ]",
                     f"docker images --format '{{{{.Repository}}}}' | tee {evidence}/{me}.images",
                     f"! docker image inspect job/{other} >/dev/null 2>&1",
                     "docker info --format '{{.DockerRootDir}} {{.SecurityOptions}}' | tee docker-info"
                     " && grep -q \"$CI_RUNNER_JOB_DIR\" docker-info"
                     ' && [ "$(stat -c %u "${DOCKER_HOST#unix://}")" = "$(id -u)" ]',  # the job user's daemon
                     "docker ps -q | grep -q .",
                     # canary: no process of the job's daemon holds the runner's JIT config in its environment
                     'n=0; for p in $(pgrep -u "$(id -u)" -f "$CI_RUNNER_JOB_DIR/docker"); do n=$((n+1));'
                     ' e=$(tr "\\0" "\\n" < /proc/$p/environ) && echo "$e" | grep -q XDG_RUNTIME_DIR || exit 1;'
                     ' ! echo "$e" | grep -q ACTIONS_RUNNER_INPUT_JITCONFIG || exit 1;'
                     ' done; echo "daemon processes checked: $n"; [ $n -ge 2 ]']
    settings = job_user_settings(emulator.url, emulator.github.repository, tmp_path, site,
                                 [{**docker_target("docker", LABELS), "docker": daemon}])
    # What a node that failed mid-job leaves: a folder of a job Slurm no longer knows (the job user's),
    # and one of another user that a job must not touch.
    node = os.uname().nodename.split(".")[0]
    node_tmp = Path(site.node_tmp)
    node_tmp.mkdir(mode=0o755)
    (node_tmp / f"runner-{node}-999999" / "docker").mkdir(parents=True)
    foreign = node_tmp / f"runner-{node}-999998"
    foreign.mkdir()
    subprocess.run(["chown", "-R", f"{local.RUNNER_USER}:", str(node_tmp)], check=True)
    os.chown(foreign, 0, 0)
    emulator.add_run([{"labels": LABELS, "name": name, "steps": steps[name]} for name in ("one", "two")])
    with serving(settings) as running:
        wait_for(lambda: emulator.summary()["completed"] == 2 or bool(running.allocator and
                                                                       running.allocator.unservable_targets),
                 240, "both docker jobs completed")
        assert running.allocator is not None and not running.allocator.unservable_targets, site.logs()
        wait_for(lambda: not our_jobs(site.prefix), 60, "both runner jobs ended")
    conclusions = {job.name: job.conclusion for job in emulator.github.jobs.values()}
    logs = "\n".join(site.logs().values())
    assert conclusions == {"one": "success", "two": "success"}, logs
    ready = {"rootless": "rootless Docker daemon ready", "podman": "Podman API service ready"}[daemon]
    assert ready in logs and "built-as-0" in logs
    for secret in [TOKEN, *emulator.github.jit_configs]:
        assert secret not in logs
    images = {name: (evidence / f"{name}.images").read_text().split() for name in ("one", "two")}
    assert "job/one" in images["one"] and "job/two" not in images["one"], images
    assert "job/two" in images["two"] and "job/one" not in images["two"], images
    folders = set(re.findall(r"works in (\S+) on", logs))
    assert len(folders) == 2 and all(folder.startswith(f"{site.node_tmp}/runner-") for folder in folders)
    assert f"removed {node_tmp}/runner-{node}-999999, left by job 999999" in logs
    assert foreign.is_dir()  # not the job user's: left alone
    foreign.rmdir()
    assert_nothing_left(site)


def test_scancel_and_the_time_limit_leave_no_daemon_socket_or_folder(emulator: Emulator, site: JobUserSite,
                                                                      tmp_path: Path) -> None:
    busy = [*base_image_steps("busy"), "docker run -d job/busy /bin/busybox sleep 600 && echo container-up",
            "sleep 600"]
    settings = job_user_settings(emulator.url, emulator.github.repository, tmp_path, site,
                                 [docker_target("cancel", [*LABELS, "cancel"]),
                                  docker_target("limit", [*LABELS, "limit"])])
    emulator.add_run([{"labels": [*LABELS, "cancel"], "steps": busy}, {"labels": [*LABELS, "limit"], "steps": busy}])
    with serving(settings):
        wait_for(lambda: "\n".join(site.logs().values()).count("container-up") == 2, 240,
                 "both jobs running a container in their daemon")
        assert len(user_processes(site.node_tmp)) > 4  # the daemons and containers this test is about
        ids = {name.rsplit(".", 2)[1]: job_id for job_id, name, _ in our_jobs(site.prefix)}
        subprocess.run(["scancel", ids["cancel"]], check=True)
        # The time limit, without waiting minutes: lower it to zero, below what the job has run (its owner
        # may); slurmctld's next check (every 30 s) ends it with TIMEOUT. `0:01` would be a whole minute.
        subprocess.run(["scontrol", "update", f"JobId={ids['limit']}", "TimeLimit=0"], check=True,
                       capture_output=True)
        wait_for(lambda: not our_jobs(site.prefix), 120, "the cancelled and the timed-out job ended")
    wait_for(lambda: len(jobcomp(site.prefix)) == 2, 30, "Slurm's completion log")
    assert sorted(jobcomp(site.prefix).values()) == ["CANCELLED", "TIMEOUT"], jobcomp(site.prefix)
    assert_nothing_left(site)


def test_a_node_without_subordinate_ids_fails_fast_and_the_target_is_marked(emulator: Emulator, site: JobUserSite,
                                                                            tmp_path: Path) -> None:
    settings = job_user_settings(emulator.url, emulator.github.repository, tmp_path, site,
                                 [docker_target("docker", LABELS)])
    emulator.add_run([{"labels": LABELS, "steps": ["docker version"]}])
    saved = {path: path.read_text() for path in (Path("/etc/subuid"), Path("/etc/subgid"))}
    try:
        for path, text in saved.items():
            path.write_text("".join(line + "\n" for line in text.splitlines()
                                    if not line.startswith(f"{local.RUNNER_USER}:")))
        with serving(settings) as running:
            allocator = running.allocator
            assert allocator is not None
            wait_for(lambda: "docker" in allocator.unservable_targets, 120, "the target marked not servable")
            reason = allocator.unservable_targets["docker"][0]
            time.sleep(2)  # more polls: no second runner while the mark holds
            registered = list(emulator.github.registered)
            status = control.render_status(control.status(settings))
    finally:
        for path, text in saved.items():
            path.write_text(text)
    assert "no subordinate uid range for ci-runner in /etc/subuid" in reason, reason
    assert len(registered) == 1, registered
    (log,) = site.logs().values()
    assert "ci-runner-unservable:" in log and "daemon ready" not in log and "starting on" not in log
    assert any("NOT SERVABLE: " in line and "subordinate uid" in line for line in status), status
    assert emulator.summary()["queued"] == 1  # the job waits for a servable runner; nothing ran it
    assert_nothing_left(site)


def test_tmpdisk_more_than_any_node_offers_makes_the_target_unservable(emulator: Emulator, site: JobUserSite,
                                                                        tmp_path: Path) -> None:
    offered = subprocess.run(["sinfo", "-h", "-N", "-o", "%d"], capture_output=True, text=True,
                             check=True).stdout.split()
    wanted = f"{max(int(size) for size in offered) + 1024}M"
    settings = job_user_settings(emulator.url, emulator.github.repository, tmp_path, site,
                                 [docker_target("big", LABELS, tmpdisk=wanted)])
    emulator.add_run([{"labels": LABELS}])
    with serving(settings) as running:
        allocator = running.allocator
        assert allocator is not None
        wait_for(lambda: allocator.last_poll > 0 and allocator.last_plan is not None, 30, "a poll")
        time.sleep(1.5)
        held = dict(allocator.last_plan.held_back)
        reason = allocator.unservable_targets.get("big", ("",))[0]
    assert f"asks {wanted} of node-local disk" in reason, reason
    assert held.get("big", "").startswith("not servable"), held
    assert emulator.github.registered == [] and not our_jobs(site.prefix)  # never queued in Slurm forever


def test_the_runner_image_is_fetched_once_per_node_and_again_when_its_digest_changes(site: JobUserSite) -> None:
    """Three jobs (two start together) run the runner inside the image, from the node's cache."""
    busybox = Path("/bin/busybox").read_bytes()
    image_dir = site.root / "images"
    image_dir.mkdir()
    archive = image_dir / "runner.tar"

    def make_image(note: str) -> None:  # a docker-archive of a scratch image, written by the job user's daemon-free way
        root = image_dir / "rootfs"
        subprocess.run(["rm", "-rf", str(root)], check=True)
        (root / "bin").mkdir(parents=True)
        (root / "bin" / "busybox").write_bytes(busybox)
        (root / "bin" / "busybox").chmod(0o755)
        (root / "bin" / "sh").symlink_to("busybox")
        (root / "note").write_text(note)
        tag = f"ci-runner-image-{site.prefix}:{note}"
        subprocess.run(f"tar -C {root} -c . | /usr/bin/docker import - {tag} >/dev/null && "
                       f"/usr/bin/docker save -o {archive} {tag} && /usr/bin/docker rmi {tag} >/dev/null",
                       shell=True, check=True)
        os.chmod(archive, 0o644)

    make_image("first")
    raw = {"github": {"repository": "octo-org/hpc-app"},
           "targets": [docker_target("img", LABELS)], "node_tmp": site.node_tmp,
           "runner_dir": str(site.runner_dir), "runner_command": "echo runner-in-image $(cat /note)",
           "container": {"image": str(archive), "engine": "docker"}}
    settings = parse_runners(raw)
    ssh = SSHSettings(host="127.0.0.1", port=local.SSHD_PORT, user=local.RUNNER_USER,
                      key_filename=str(local.loopback_key()), known_hosts=str(local.loopback_known_hosts()))
    host = SSHHost(ssh)
    scheduler = SlurmScheduler(host)
    digests = imagecache.Digests(host)
    job_dir = str(site.job_dir)
    host.run(["mkdir", "-p", f"{job_dir}/jit", f"{job_dir}/logs"])

    def submit(count: int) -> list[str]:
        ids = []
        for _ in range(count):
            runner = jobs.runner_name(site.prefix, "img")
            host.write_text(jobs.jit_path(job_dir, runner), "not-a-real-config", mode=0o600)
            spec = jobs.job_spec(settings, settings.targets[0], runner, job_dir,
                                 image=digests.resolve(str(archive)))
            ids.append(scheduler.submit(jobs.with_directives(spec, scheduler.directives(spec))))
        return ids

    def finished(ids: list[str]) -> bool:
        return all(status.terminal for status in scheduler.poll(ids).values())

    def cache_files() -> dict[str, int]:
        caches = list(Path(site.node_tmp).glob("ci-runner-images-*"))
        return {path.name: path.stat().st_ino for cache in caches for path in cache.iterdir()
                if not path.name.endswith(".lock")}

    try:
        first = submit(3)
        wait_for(lambda: finished(first), 240, "three runner jobs")
        statuses = scheduler.poll(first)
        logs = "\n".join(site.logs().values())
        assert all(status.state is JobState.COMPLETED and status.exit_code == 0 for status in statuses.values()), \
            (statuses, logs)
        assert logs.count("runner-in-image first") == 3, logs
        assert logs.count("cache miss") == 1 and logs.count("cache hit") == 2, logs
        assert digests.computed == 1  # the allocator side read the file once for three jobs
        entries = cache_files()
        assert len(entries) == 1, entries
        make_image("second")  # a new digest
        second = submit(1)
        wait_for(lambda: finished(second), 120, "the job after the image changed")
        logs = "\n".join(site.logs().values())
        assert logs.count("runner-in-image second") == 1 and logs.count("cache miss") == 2, logs
        assert digests.computed == 2
        now = cache_files()
        assert len(now) == 2 and set(entries.items()) <= set(now.items())  # the first copy was never fetched again
        assert_nothing_left(site)
    finally:
        host.close()
