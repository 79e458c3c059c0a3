"""The site lock on a real folder: atomic acquire, one winner of a take-over, leases, members, loss.

Races are real: separate processes (`multiprocessing`, fork) hit the same lock folder at once,
through the same shell commands an SSH site runs.
"""

from __future__ import annotations

import itertools
import json
import multiprocessing
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ci.hosts import LocalHost
from ci.site.layout import LOCK, Site, SiteLocked, this_process


def _site(root: Path) -> Site:
    site = Site(LocalHost(), str(root))
    site.ensure_layout()
    return site


def _plant(root: Path, run_id: str, *, pid: int | None = None, age: float = 0.0, host: str | None = None) -> str:
    """A lock left by another process: dead (pid), on another host, or not renewed for `age` seconds."""
    owner = replace(this_process(run_id), nonce=f"planted-{run_id}")
    if pid is not None:
        owner = replace(owner, pid=pid)
    if host is not None:
        owner = replace(owner, host=host, boot_id="another-boot")
    lock = root / LOCK
    (lock / "members").mkdir(parents=True)
    (lock / "owner.json").write_text(json.dumps(owner.record()))
    member = lock / "members" / owner.member
    member.write_text(json.dumps(owner.record()))
    if age:
        os.utime(member, (time.time() - age, time.time() - age))
    return owner.nonce


def assert_one_holder_at_a_time(site: Site) -> int:
    """Every lock generation's logged span ends before the next one's begins; returns how many."""
    spans = site.lock_spans()
    for (_, end, _), (begin, _, _) in itertools.pairwise(spans):
        assert end <= begin, f"two holders of the site at once: {spans}"
    return len(spans)


def _dead_pid() -> int:
    gone = subprocess.Popen(["true"])
    gone.wait()
    return gone.pid


def _contend(root: str, run_id: str, resume: bool, start: float, results: Any, release: Any) -> None:
    site = Site(LocalHost(), root)
    while time.time() < start:
        time.sleep(0.001)
    try:
        lease = site.lock(run_id, resume=resume)
    except SiteLocked:
        results.put("lost")
        return
    results.put("won")
    release.wait(30)  # hold it until every other contender has tried (however slow this machine is)
    lease.release()


def _race(root: Path, contenders: int, run_id: str, resume: bool) -> list[str]:
    context = multiprocessing.get_context("fork")
    results, release = context.Queue(), context.Event()
    start = time.time() + 0.3
    processes = [context.Process(target=_contend, args=(str(root), run_id, resume, start, results, release))
                 for _ in range(contenders)]
    for process in processes:
        process.start()
    outcomes = []
    try:
        for _ in processes:
            outcomes.append(results.get(timeout=30))
            if len(outcomes) == contenders or outcomes.count("won") > 1:
                release.set()
    finally:
        release.set()
        for process in processes:
            process.join(30)
    return sorted(outcomes)


def test_of_racing_runs_exactly_one_takes_a_free_site(tmp_path: Path) -> None:
    _site(tmp_path)
    for _ in range(3):
        assert _race(tmp_path, 6, "new-run", resume=False) == ["lost"] * 5 + ["won"]
    assert not (tmp_path / LOCK).exists()
    assert assert_one_holder_at_a_time(_site(tmp_path)) == 3


def test_of_racing_resumers_exactly_one_takes_over_a_dead_runs_lock(tmp_path: Path) -> None:
    site = _site(tmp_path)
    for round_ in range(3):
        _plant(tmp_path, f"crashed-{round_}", pid=_dead_pid())
        assert _race(tmp_path, 6, f"crashed-{round_}", resume=True) == ["lost"] * 5 + ["won"]
        assert site.read_lock() is None
    events = [(event["event"], event["detail"]) for _, event in site.lock_history()]
    names = [name for name, _ in events]
    assert events.count(("removed", "take-over")) == 3  # the dead lock removed once per round
    assert names.count("took-over") + names.count("acquired") == 3  # and the site taken by one run
    assert_one_holder_at_a_time(site)


def test_a_live_lock_is_never_taken_and_names_its_holder(tmp_path: Path) -> None:
    site = _site(tmp_path)
    lease = site.lock("holder")
    with pytest.raises(SiteLocked, match=r"in use by run holder \(pid"):
        site.lock("other")
    with pytest.raises(SiteLocked):
        site.lock("holder", resume=True)  # alive: nothing to resume
    lease.release()
    assert site.read_lock() is None


def test_a_lock_from_another_host_waits_for_its_lease_then_expires(tmp_path: Path) -> None:
    site = _site(tmp_path)
    _plant(tmp_path, "elsewhere", host="login-7")
    with pytest.raises(SiteLocked, match="in use by run elsewhere"):
        site.lock("mine")  # another host's process cannot be proven dead
    (tmp_path / LOCK).rename(tmp_path / "old")
    _plant(tmp_path, "elsewhere", host="login-7", age=700)
    lease = site.lock("mine", lease=600)
    assert lease.took_over is not None and lease.took_over.run_id == "elsewhere"
    lease.release()


def test_a_dead_runs_lock_does_not_block_the_next_run(tmp_path: Path) -> None:
    """A CI step killed with SIGKILL leaves its lock; the next run (another id) takes the site, told so."""
    site = _site(tmp_path)
    _plant(tmp_path, "crashed", pid=_dead_pid())
    lease = site.lock("another")
    assert lease.took_over is not None and lease.took_over.run_id == "crashed"
    lease.release()


def test_the_members_of_one_run_hold_it_until_the_last_leaves(tmp_path: Path) -> None:
    site = _site(tmp_path)
    first = site.lock("gh-7-1")
    second = site.lock("gh-7-1", join=True)
    assert second.joined and len(site.read_state().members) == 2  # type: ignore[union-attr]
    first.release()
    with pytest.raises(SiteLocked):
        site.lock("gh-8-1")
    second.release()
    assert site.read_lock() is None


def test_a_holder_whose_lock_was_taken_is_told(tmp_path: Path) -> None:
    site = _site(tmp_path)
    lost: list[str] = []
    lease = site.lock("slow", on_lost=lost.append, heartbeat=0.1)
    time.sleep(0.3)
    assert not lost, "renewing its own lock is fine"
    site.force_unlock()
    other = site.lock("fast")
    deadline = time.monotonic() + 5
    while not lost and time.monotonic() < deadline:
        time.sleep(0.05)
    assert lost and "lost the site lock" in lost[0]
    lease.release()  # a lost lease never removes the new holder's lock
    assert site.read_lock() is not None and site.read_lock().run_id == "fast"  # type: ignore[union-attr]
    other.release()


def test_heartbeats_renew_the_lease(tmp_path: Path) -> None:
    site = _site(tmp_path)
    lease = site.lock("beating", lease=2.0, heartbeat=0.2)
    member = next((tmp_path / LOCK / "members").iterdir())
    os.utime(member, (time.time() - 100, time.time() - 100))
    time.sleep(0.6)
    assert time.time() - member.stat().st_mtime < 5
    assert not site.read_state().expired  # type: ignore[union-attr]
    lease.release()
