"""The job side of a runner: settings of the per-job daemon, node-local folders and the image cache,
and the rendered job script, run by a real bash (no Slurm: `SLURM_JOB_ID` is set by hand)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ci.config.runners import RunnersConfigError, parse_runners, tmpdisk_mb
from ci.hosts import LocalHost
from ci.runners import batch as jobs
from ci.runners import imagecache, nodework
from ci.schedulers import SlurmScheduler
from tests.support.services import unmet

GOOD: dict[str, Any] = {"github": {"repository": "octo-org/hpc-app"},
                        "targets": [{"name": "cpu", "labels": ["self-hosted", "slurm"]}]}


def problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(RunnersConfigError) as raised:
        parse_runners(raw)
    return [str(problem) for problem in raised.value.problems]


def target(**more: Any) -> dict[str, Any]:
    return {**GOOD, "targets": [{"name": "cpu", "labels": ["self-hosted", "slurm"], **more}]}


@pytest.mark.parametrize(("raw", "field", "message"), [
    (target(docker="docker"), "ci.runners.targets[0].docker", "rootless"),
    (target(docker="rootless; rm -rf /"), "ci.runners.targets[0].docker", "rootless"),
    (target(slurm={"tmpdisk": "20X"}), "ci.runners.targets[0].slurm.tmpdisk", "not a disk size"),
    (target(slurm={"tmpdisk": "-1G"}), "ci.runners.targets[0].slurm.tmpdisk", "not a disk size"),
    (target(slurm={"tmpdisk": "9" * 40}), "ci.runners.targets[0].slurm.tmpdisk", "not a disk size"),
    (target(slurm={"tmpdisk": "20G\n#SBATCH --uid=0"}), "ci.runners.targets[0].slurm.tmpdisk", "not a disk size"),
    (target(slurm={"tmpdisk": "20G", "extra": ["--tmp=10G"]}), "ci.runners.targets[0].slurm", "both ask"),
    ({**GOOD, "node_tmp": "scratch"}, "ci.runners.node_tmp", "absolute path"),
    ({**GOOD, "node_tmp": "/tmp/../etc"}, "ci.runners.node_tmp", "climbs out"),
    ({**GOOD, "node_tmp": "/tmp/$(reboot)"}, "ci.runners.node_tmp", "absolute path"),
    ({**GOOD, "node_tmp": "/tmp/a b"}, "ci.runners.node_tmp", "absolute path"),
    ({**GOOD, "node_tmp": "/" + "x" * 60}, "ci.runners.node_tmp", "up to 48"),
    ({**GOOD, "node_tmp": "--help"}, "ci.runners.node_tmp", "absolute path"),
    ({**GOOD, "work_folder": "../../home/other"}, "ci.runners.work_folder", "climbs out"),
    ({**GOOD, "container": {"image": "runner.sif"}}, "ci.runners.container.image", "absolute path"),
    ({**GOOD, "container": {"image": "/images/../etc/shadow"}}, "ci.runners.container.image", "climbs out"),
    ({**GOOD, "container": {"image": "/images/r.sif;reboot"}}, "ci.runners.container.image", "absolute path"),
    ({**GOOD, "container": {"image": "/images/r.sif", "cache_max_age": 1}}, "ci.runners.container.cache_max_age",
     "below the minimum"),
])
def test_bad_docker_tmpdisk_folder_and_image_settings_name_the_field(raw: dict[str, Any], field: str,
                                                                     message: str) -> None:
    found = problems(raw)
    assert any(field in problem and message in problem for problem in found), found
    assert all("Traceback" not in problem for problem in found)


def test_tmpdisk_becomes_slurms_tmp_option_in_megabytes() -> None:
    settings = parse_runners(target(slurm={"tmpdisk": "20G"}, docker="rootless"))
    spec = jobs.job_spec(settings, settings.targets[0], "ghr-cpu-0123abcd", "/state/jobs")
    assert "--tmp=20G" in SlurmScheduler(LocalHost()).directives(spec)[-1] or any(
        "--tmp=20G" in line for line in SlurmScheduler(LocalHost()).directives(spec))
    assert (tmpdisk_mb("20G"), tmpdisk_mb("512M"), tmpdisk_mb("100"), tmpdisk_mb("1T")) == (20480, 512, 100, 1048576)


@pytest.mark.parametrize("docker", [None, "rootless", "podman"])
@pytest.mark.parametrize("engine", [None, "docker", "apptainer", "charliecloud"])
def test_every_job_script_is_valid_bash_and_holds_no_config(docker: str | None, engine: str | None) -> None:
    raw = target(docker=docker)
    if engine:
        raw["container"] = {"image": "/images/runner.tar", "engine": engine}
    settings = parse_runners(raw)
    image = imagecache.ImageDigest("/images/runner.tar", "sha256:" + "ab" * 32, 10) if engine else None
    script = jobs.job_script(settings, settings.targets[0], "ghr-cpu-0123abcd", "/state/jobs/jit/x.jit", image)
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True, check=False)
    assert checked.returncode == 0, checked.stderr
    assert script.index('rm -f "$jit"') < script.index("ci_make_folder\n")
    if docker:
        assert "unset ACTIONS_RUNNER_INPUT_JITCONFIG" in script  # the daemon never holds the config
        assert "ci_unservable" in script and "/etc/$ci_ids" in script
    if engine:
        assert '"$CI_RUNNER_IMAGE"' in script and "/images/runner.tar" not in script.split("exec 8>")[1].split(
            "cp -- ")[0]
    if engine == "docker" and docker:
        assert "-e DOCKER_HOST" in script and '"$CI_RUNNER_JOB_DIR":"$CI_RUNNER_JOB_DIR"' in script


def test_the_jit_work_folder_is_a_link_in_node_tmp_unless_the_operator_gave_a_path() -> None:
    settings = parse_runners({**GOOD, "node_tmp": "/local/scratch/"})
    assert nodework.work_link(settings, "ghr-cpu-0123abcd") == "/local/scratch/ghr-cpu-0123abcd.work"
    assert nodework.work_link(parse_runners({**GOOD, "work_folder": "/fast/w"}), "r") == "/fast/w"


@pytest.fixture
def node_tmp() -> Iterator[Path]:
    """A short node_tmp (pytest's tmp_path is longer than the 48 characters a socket path leaves)."""
    folder = Path(tempfile.mkdtemp(prefix="cirj-", dir="/tmp"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_script(tmp_path: Path, node_tmp: Path, runner_command: str,
               **more: Any) -> tuple[subprocess.Popen[str], Path]:
    runner_dir = tmp_path / "runner"
    runner_dir.mkdir()
    jit = tmp_path / "x.jit"
    jit.write_text("canary-jit-config")
    jit.chmod(0o600)
    settings = parse_runners({**GOOD, "node_tmp": str(node_tmp), "runner_dir": str(runner_dir),
                              "runner_command": runner_command, **more})
    script = tmp_path / "job.sh"
    script.write_text(jobs.job_script(settings, settings.targets[0], "ghr-cpu-0123abcd", str(jit)))
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "SLURM_JOB_ID": "424242"}
    process = subprocess.Popen(["bash", str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, jit


def test_the_job_works_in_its_node_local_folder_and_removes_it(tmp_path: Path, node_tmp: Path) -> None:
    process, jit = run_script(
        tmp_path, node_tmp, 'echo "work=$(readlink /dev/null $PWD)"; ls -ld "$CI_RUNNER_JOB_DIR"; '
                  'readlink "$(dirname "$CI_RUNNER_JOB_DIR")/ghr-cpu-0123abcd.work"; '
                  'test -z "$(env | grep -c canary-jit-config | grep -v 1)"; exit 7')
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 7, output  # the runner's exit status is the job's
    folder = f"{node_tmp}/runner-{os.uname().nodename.split('.')[0]}-424242"
    assert f"works in {folder} on" in output and f"{folder}/_work" in output
    assert "drwx------" in output
    assert not jit.exists() and list(node_tmp.iterdir()) == []  # no folder, no work link left
    assert "canary-jit-config" not in output


# A stand-in for `podman` at the CLI boundary: it logs its arguments, refuses a --runroot longer than
# 50 characters as Podman 4 does, and for `system service` answers Docker's /_ping on the socket.
FAKE_PODMAN = """#!/bin/sh
echo "podman $*" >> "$FAKE_PODMAN_LOG"
runroot=""; prev=""
for arg in "$@"; do [ "$prev" = --runroot ] && runroot=$arg; prev=$arg; done
if [ "${#runroot}" -gt 50 ]; then echo "Error: the specified runroot is longer than 50 characters" >&2; exit 125; fi
case "$*" in
    *"system service"*) for arg in "$@"; do sock=$arg; done; exec python3 "$FAKE_PODMAN_SERVER" "${sock#unix://}" ;;
esac
exit 0
"""
FAKE_PODMAN_SERVER = """import http.server, socketserver, sys
class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"OK")
    def address_string(self): return "unix"
    def log_message(self, *args): pass
socketserver.UnixStreamServer(sys.argv[1], Ping).serve_forever()
"""


@pytest.mark.parametrize("job_id", ["4", "12345678"])
def test_podmans_run_root_is_short_enough_and_goes_with_the_job(tmp_path: Path, job_id: str) -> None:
    """Podman refuses a run root over 50 characters; a real node's job folder is longer than that."""
    if not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        unmet("/dev/net/tun is not usable here (`inv local.up` makes it 0666); the job script checks it")
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, text in {"podman": FAKE_PODMAN, "newuidmap": "#!/bin/sh\n", "newgidmap": "#!/bin/sh\n",
                       "slirp4netns": "#!/bin/sh\n", "getsubids": "#!/bin/sh\necho \"0: $1 100000 65536\"\n"}.items():
        (fakes / name).write_text(text)
        (fakes / name).chmod(0o755)
    (tmp_path / "server.py").write_text(FAKE_PODMAN_SERVER)
    node_tmp = Path(tempfile.mkdtemp(prefix="c", dir="/tmp"))  # as short as a node_tmp gets
    try:
        runner_dir = tmp_path / "runner"
        runner_dir.mkdir()
        jit = tmp_path / "x.jit"
        jit.write_text("canary-jit-config")
        settings = parse_runners({**target(docker="podman"), "node_tmp": str(node_tmp),
                                  "runner_dir": str(runner_dir),
                                  "runner_command": 'curl -fsS --unix-socket "${DOCKER_HOST#unix://}" http://d/_ping'
                                                    ' && echo " pinged"'})
        script = tmp_path / "job.sh"
        script.write_text(jobs.job_script(settings, settings.targets[0], "ghr-cpu-0123abcd", str(jit)))
        log = tmp_path / "podman.log"
        env = {"PATH": f"{fakes}:{os.environ['PATH']}", "HOME": str(tmp_path), "SLURM_JOB_ID": job_id,
               "FAKE_PODMAN_LOG": str(log), "FAKE_PODMAN_SERVER": str(tmp_path / "server.py")}
        result = subprocess.run(["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=60, check=False, start_new_session=True)
        output = result.stdout + result.stderr
        assert result.returncode == 0 and "OK pinged" in output and "Podman API service ready" in output, output
        runroots = {line.split("--runroot ")[1].split()[0] for line in log.read_text().splitlines()}
        assert len(runroots) == 1, runroots  # the service, stop and rm all name the same one
        runroot = runroots.pop()
        job_folder = f"{node_tmp}/runner-{os.uname().nodename.split('.')[0]}-{job_id}"
        if len(f"{job_folder}/docker/run/storage") <= 50:
            assert runroot == f"{job_folder}/docker/run/storage"
        else:
            assert runroot.startswith("/tmp/ci-podman.") and len(runroot) <= 50
        assert not Path(runroot).exists() and list(node_tmp.iterdir()) == []  # nothing of the job is left
        assert subprocess.run(["pgrep", "-f", str(tmp_path / "server.py")], check=False).returncode == 1
    finally:
        shutil.rmtree(node_tmp, ignore_errors=True)


def test_sigterm_stops_the_runner_and_removes_the_folder(tmp_path: Path, node_tmp: Path) -> None:
    """What scancel and the time limit do: SIGTERM to the job, SIGKILL KillWait later."""
    process, _ = run_script(tmp_path, node_tmp, 'echo "runner pid $$"; exec sleep 600')
    assert process.stdout is not None
    line = ""
    for line in process.stdout:
        if line.startswith("runner pid"):
            break
    runner_pid = int(line.split()[-1])
    assert any(node_tmp.iterdir())
    os.kill(process.pid, signal.SIGTERM)
    process.wait(timeout=20)
    assert process.returncode == 143
    assert list(node_tmp.iterdir()) == []
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{runner_pid}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{runner_pid}").exists(), "the runner outlived its job"


def test_a_work_link_owned_by_someone_else_stops_the_job(node_tmp: Path) -> None:
    """Runner names are public: another user may plant `<runner>.work` in a shared node_tmp first."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to plant a link owned by another user and run the job as nobody")
    os.chmod(node_tmp, 0o755)
    shared = node_tmp / "shared"
    shared.mkdir(mode=0o1777)
    shared.chmod(0o1777)
    planted = shared / "ghr-cpu-0123abcd.work"
    planted.symlink_to("/etc")  # root's: nobody cannot replace it in a sticky folder
    (node_tmp / "runner").mkdir(mode=0o755)
    jit = node_tmp / "x.jit"
    jit.write_text("canary-jit-config")
    os.chown(jit, 65534, 65534)
    settings = parse_runners({**GOOD, "node_tmp": str(shared), "runner_dir": str(node_tmp / "runner"),
                              "runner_command": "echo runner-ran"})
    script = node_tmp / "job.sh"
    script.write_text(jobs.job_script(settings, settings.targets[0], "ghr-cpu-0123abcd", str(jit)))
    script.chmod(0o644)
    result = subprocess.run(["runuser", "-u", "nobody", "--", "bash", str(script)], cwd="/",
                            env={"PATH": os.environ["PATH"], "SLURM_JOB_ID": "424243"},
                            capture_output=True, text=True, timeout=30, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == nodework.SETUP_EXIT and "belongs to someone else" in output, output
    assert "runner-ran" not in output
    assert planted.is_symlink() and os.readlink(planted) == "/etc"  # left as it was, and not followed
    assert [path.name for path in shared.iterdir()] == [planted.name]  # the job's own folder is removed


def run_fetch(node_tmp: Path, source: Path, digest: str | None = None, *, max_age: float = 86400,
              hold: Path | None = None) -> subprocess.CompletedProcess[str]:
    """The cache fragment of a job script in a real bash (as the job script defines ci_log and ci_node)."""
    settings = parse_runners({**GOOD, "node_tmp": str(node_tmp),
                              "container": {"image": str(source), "cache_max_age": max_age}})
    real = subprocess.run(["sha256sum", str(source)], capture_output=True, text=True, check=True).stdout.split()[0]
    image = imagecache.ImageDigest(str(source), digest or f"sha256:{real}", source.stat().st_size)
    script = ('ci_node=n1\nci_log() { echo "log: $*"; }\n' + imagecache.fetch(settings, image)
              + 'echo "image=$ci_image"\n')
    command = ["bash", "-c", script]
    if hold is not None:  # another job is using that entry: it holds the entry's lock shared
        command = ["flock", "-s", str(hold), *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)


def test_the_cache_fetches_once_checks_the_digest_and_prunes_old_unused_entries(tmp_path: Path,
                                                                                node_tmp: Path) -> None:
    source = tmp_path / "runner.sif"
    source.write_bytes(b"image one" * 1000)
    first = run_fetch(node_tmp, source)
    assert first.returncode == 0 and "cache miss" in first.stdout, first.stderr
    cached = Path(first.stdout.split("image=")[1].strip())
    assert cached.read_bytes() == source.read_bytes() and cached.suffix == ".sif"
    assert (cached.parent.stat().st_mode & 0o777) == 0o700
    again = run_fetch(node_tmp, source)
    assert "cache hit" in again.stdout
    assert cached.stat().st_ino == Path(again.stdout.split("image=")[1].strip()).stat().st_ino  # not copied again

    # A file that changes between the allocator's digest and the job's copy is refused, and nothing is cached.
    source.write_bytes(b"image two" * 1000)
    stale = run_fetch(node_tmp, source, digest="sha256:" + "0" * 64)
    assert stale.returncode == nodework.SETUP_EXIT and "changed while it was copied" in stale.stderr
    assert not list(cached.parent.glob("0000*.sif")) and not list(cached.parent.glob("*.part.*"))

    # Entries unused for longer than cache_max_age go, unless a job holds them.
    os.utime(cached, (time.time() - 3 * 86400, time.time() - 3 * 86400))
    held = run_fetch(node_tmp, source, max_age=86400, hold=cached.with_name(cached.name.split(".")[0] + ".lock"))
    assert held.returncode == 0 and cached.exists(), held.stdout
    pruned = run_fetch(node_tmp, source, max_age=86400)
    assert pruned.returncode == 0 and f"pruned {cached}" in pruned.stdout and not cached.exists()
