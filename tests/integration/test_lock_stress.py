"""The site lock under fire: several `inv build-all` at once against one site, with random kill -9s.

Each round changes the definitions (so there is work to do), starts 2 or 4 `build-all` processes
at the same moment, and SIGKILLs the one holding the site at a random moment (alone, so that its
conversions and jobs live on as orphans, or with its whole process group). Then it starts the same
number again: they race to take over the dead run's lock, exactly one resumes it, the others are
told the site is in use; that goes on until a run finishes. After every round:

- the lock's history (`<site>/.lock.log`) shows one holder at a time: each lock generation's span
  ends before the next begins (see ci.site: the spans are logged inside the real ones);
- every process either finished the run, was killed, or was refused with "in use";
- nothing is half-promoted: no empty name folder in tested/ or failed/, every promoted folder holds
  its image file, result.json and each test's log and exit file, and nothing half-written;
- the images whose tests pass are in tested/ and never in failed/; failed/ holds only the image
  whose test fails, with a failing verdict;
- the site lock is free at the end.

The suite runs a short version (a round of 2, a round of 4, a round of 2 over SSH, each with at
least one kill); `nox -s stress` (CI_STRESS_ROUNDS, default 20) runs the long one.
Images are tiny (dash and libc on scratch, with the folders ch-run binds; a 1 MB SquashFS); tests
run with the direct scheduler locally (no Slurm queue to wait for) and with Slurm over SSH.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from ci.hosts import LocalHost, SSHSettings
from ci.site.layout import Site
from tests.support.paths import PROJECT_DIR
from tests.support.services import BASE_IMAGE, REGISTRY
from tests.support.site_helpers import SiteProject, isolated_project

pytestmark = [pytest.mark.docker, pytest.mark.registry, pytest.mark.slurm, pytest.mark.stress]

ROUNDS = int(os.environ.get("CI_STRESS_ROUNDS", "0"))
PASSING = ("one", "two")
FAILING = "bad"
TESTS = {"one": ["smoke"], "two": ["smoke"], "bad": ["broken"]}
TINY = """FROM {base} AS src
FROM scratch
COPY --from=src /bin/dash /bin/sh
COPY --from=src /bin/sleep /bin/sleep
COPY --from=src /lib/x86_64-linux-gnu/libc.so.6 /lib/x86_64-linux-gnu/
COPY --from=src /lib64/ld-linux-x86-64.so.2 /lib64/
COPY --from=src /etc/passwd /etc/group /etc/
COPY --from=src /tmp /tmp
COPY --from=src /home /home
COPY --from=src /var/tmp /var/tmp
RUN echo {token} > /token
"""


@dataclass
class Tally:
    rounds: int = 0
    processes: int = 0
    kills: int = 0
    takeovers: int = 0
    refused: int = 0
    generations: int = 0
    log: list[str] = field(default_factory=list)


def write_definitions(project: SiteProject, token: str) -> None:
    """one (tiny), two (FROM one), bad (tiny, its test fails); a new token makes new digests."""
    for name in ("one", "two", "bad"):
        folder = project.definitions / "amd64" / name
        (folder / "tests").mkdir(parents=True, exist_ok=True)
        body = TINY.format(base=BASE_IMAGE, token=f"{token}-{name}") if name != "two" else \
            f"FROM one\nRUN echo {token}-two > /two\n"
        (folder / "Dockerfile").write_text(body, encoding="utf-8")
        test = TESTS[name][0]
        # each test takes three seconds, so a run outlasts the random kill (0.2-3 s after it holds the site; with the
        # library's start-up made fast, a run of cached tiny images could end before the kill)
        verdict = 'echo "Test success $CI_IMAGE"\n' if name in PASSING else 'echo "about to fail"\nexit 3\n'
        script = "sleep 3\n" + verdict
        (folder / "tests" / f"{test}.sh").write_text("#!/bin/sh\n" + script, encoding="utf-8")
        meta = {"version": "1.0", "tests": [{"name": test, "script": f"tests/{test}.sh",
                                             "slurm": {"time": "00:05:00"},
                                             "expect": {"exit_code": 0, "patterns": ["Test success"]}}]}
        (folder / "container.yaml").write_text(yaml.safe_dump(meta), encoding="utf-8")


def start(project: SiteProject, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(project.inv_command("build-all", "--json", config=config), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=PROJECT_DIR, start_new_session=True)


def holder_pid(site_root: Path) -> int | None:
    try:
        return int(json.loads((site_root / ".lock" / "owner.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def one_holder_at_a_time(site: Site) -> int:
    """Every lock generation's logged span ends before the next one's begins; returns how many."""
    spans = site.lock_spans()
    for (_, end, _), (begin, _, _) in itertools.pairwise(spans):
        assert end <= begin, f"two holders of the site at once: {spans}"
    return len(spans)


def nothing_half_promoted(site_root: Path) -> None:
    for verdict in ("tested", "failed"):
        folder = site_root / verdict
        for name in folder.iterdir() if folder.is_dir() else ():
            stems = list(name.iterdir())
            assert stems, f"an empty name folder {name}"
            for stem in stems:
                files = {path.name for path in stem.iterdir()}
                assert f"{stem.name}.sqfs" in files and (stem / f"{stem.name}.sqfs").stat().st_size > 0, stem
                assert "result.json" in files, f"{stem}: no result.json"
                half = [str(p) for p in stem.rglob("*") if p.name.endswith((".part", ".tmp")) or ".part." in p.name]
                assert not half, f"half-written files in {stem}: {half}"
                result = json.loads((stem / "result.json").read_text())
                for test in TESTS[name.name]:
                    assert (stem / "logs" / f"{test}.out").is_file() and (stem / "logs" / f"{test}.exit").is_file()
                assert result["verdict"] == verdict
                passed = all(test["passed"] for test in result["tests"])
                if verdict == "failed":
                    assert name.name == FAILING and not passed, f"a passing image in failed/: {stem}"
                else:
                    assert name.name in PASSING and passed, f"a failing image in tested/: {stem}"


def race_round(project: SiteProject, config: Path, contenders: int, rng: random.Random, tally: Tally) -> None:
    token = f"{project.token}-r{tally.rounds}"
    write_definitions(project, token)
    site_root = Path(project.site_root)
    kills_wanted = rng.choice([1, 1, 2])
    finished: dict[str, Any] | None = None
    for attempt in range(8):
        processes = [start(project, config) for _ in range(contenders)]
        tally.processes += contenders
        killed: set[int] = set()
        if kills_wanted > 0:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and holder_pid(site_root) not in {p.pid for p in processes}:
                if all(p.poll() is not None for p in processes):
                    break
                time.sleep(0.05)
            time.sleep(rng.uniform(0.2, 3.0))  # anywhere in build, push, convert, test or promote (a run: 3-10 s)
            pid = holder_pid(site_root)
            victim = next((p for p in processes if p.pid == pid and p.poll() is None), None)
            if victim is not None:
                group = rng.random() < 0.5
                os.killpg(victim.pid, signal.SIGKILL) if group else victim.kill()
                killed.add(victim.pid)
                kills_wanted -= 1
                tally.kills += 1
                tally.log.append(f"round {tally.rounds} attempt {attempt}: kill -9 {'group ' if group else ''}"
                                 f"{victim.pid}")
        for process in processes:
            out, err = process.communicate(timeout=600)
            if process.pid in killed:
                continue
            if process.returncode == 2:
                assert "in use" in err, f"refused for another reason:\n{err[-3000:]}"
                tally.refused += 1
                continue
            assert process.returncode in (0, 1), f"exit {process.returncode}:\n{err[-3000:]}"
            assert finished is None, "two runs finished in one attempt"
            assert out.strip(), f"exit {process.returncode} without a report:\n{err[-3000:]}"
            finished = json.loads(out)
            if "took over" in err or "resuming it" in err:
                tally.takeovers += 1
        if finished is not None:
            break
    assert finished is not None, f"no run finished in round {tally.rounds}"
    states = {image["name"]: image["state"] for image in finished["images"]}
    assert {name: state for name, state in states.items() if state != "up to date"}.items() <= {
        "one": "done", "two": "done", "bad": "failed"}.items(), states  # "up to date": promoted before the kill
    nothing_half_promoted(site_root)
    tested = {name.name: len(list(name.iterdir())) for name in (site_root / "tested").iterdir()}
    assert set(tested) == set(PASSING) and all(count == tally.rounds + 1 for count in tested.values()), tested
    assert not (site_root / ".lock").exists(), "the site lock is left behind"
    tally.generations = one_holder_at_a_time(Site(LocalHost(), project.site_root))
    tally.rounds += 1


@pytest.fixture
def stress_project(tmp_path: Path) -> Iterator[SiteProject]:
    yield from isolated_project(tmp_path)


def _config(project: SiteProject, **site: Any) -> Path:
    return project.write_config(project.root / "stress.yaml", **{"scheduler": "direct", "poll_interval": 0.3, **site})


def _report(tally: Tally) -> None:
    print(f"\nlock stress: {tally.rounds} rounds, {tally.processes} build-all processes, {tally.kills} kill -9s, "
          f"{tally.takeovers} runs resumed after a kill, {tally.refused} refused (site in use), "
          f"{tally.generations} lock generations, one holder at a time")
    print("\n".join(tally.log))


def test_racing_build_alls_on_one_local_site_never_share_it(stress_project: SiteProject) -> None:
    rng = random.Random(int(os.environ.get("CI_STRESS_SEED", "0")) or None)
    tally = Tally()
    config = _config(stress_project)
    plan = [2, 4] if ROUNDS <= 0 else [2 if n % 2 == 0 else 4 for n in range(max(ROUNDS - ROUNDS // 5, 1))]
    for contenders in plan:
        race_round(stress_project, config, contenders, rng, tally)
    _report(tally)
    assert tally.kills >= len(plan)


def test_racing_build_alls_over_ssh_never_share_the_site(stress_project: SiteProject,
                                                         loopback_ssh: SSHSettings) -> None:
    rng = random.Random(int(os.environ.get("CI_STRESS_SEED", "0")) or None)
    tally = Tally()
    ssh = {"host": loopback_ssh.host, "port": loopback_ssh.port, "user": loopback_ssh.user,
           "key_filename": loopback_ssh.key_filename, "known_hosts": loopback_ssh.known_hosts}
    section = stress_project.config(scheduler="slurm", poll_interval=0.3, registry={"address": REGISTRY,
                                                                                    "insecure": True})
    # invoke cannot merge a mapping over invoke.yaml's `ssh: null`; a profile's keys go through our own merge
    section["profiles"]["local"]["site"] = {"ssh": ssh}
    config = stress_project.root / "stress-ssh.yaml"
    config.write_text(yaml.safe_dump({"ci": section}, sort_keys=False), encoding="utf-8")
    for _ in range(1 if ROUNDS <= 0 else max(ROUNDS // 5, 1)):
        race_round(stress_project, config, 2, rng, tally)
    _report(tally)
    assert tally.kills >= 1
