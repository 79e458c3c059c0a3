"""Reconcile against the real Slurm and the emulated GitHub: adopt, cancel, delete, undo; and the task edge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from ci.hosts import without_secrets
from ci.runners import control
from ci.runners.logic import Phase
from tests.github_emulator import TOKEN, Emulator
from tests.github_emulator.testing import cancel_all, our_jobs, settings_for, target, unique_prefix
from tests.support.paths import PROJECT_DIR
from tests.support.services import require_slurm

pytestmark = pytest.mark.slurm


@pytest.fixture(autouse=True)
def slurm(monkeypatch: pytest.MonkeyPatch) -> None:
    require_slurm()
    monkeypatch.setenv("CI_GITHUB_TOKEN", TOKEN)


@pytest.fixture
def prefix() -> Iterator[str]:
    name = unique_prefix()
    yield name
    cancel_all(name)


def held_job(name: str, tmp_path: Path) -> str:
    """A job of ours as squeue would show it after a lost state (held: it never runs)."""
    return subprocess.run(["sbatch", "--parsable", "--hold", f"--job-name={name}", "--time=00:02:00",
                           f"--output={tmp_path}/held.out", "--wrap=true"], capture_output=True, text=True,
                          check=True, env=without_secrets(os.environ)).stdout.strip()


def test_reconcile_adopts_cancels_deletes_and_undoes(prefix: str, tmp_path: Path) -> None:
    with Emulator() as emulator:
        settings = settings_for(emulator, tmp_path, [target("cpu", ["self-hosted", "slurm"])], prefix=prefix)
        with control.allocator(settings) as allocator:
            github = allocator.github
            adopted, orphan_job, stale, interrupted = (f"{prefix}-cpu-{n:08x}" for n in (1, 2, 3, 4))
            github.generate_jitconfig(adopted, ["self-hosted", "slurm"], 1, "_work")  # its job lives on
            adopted_id = held_job(f"{prefix}.cpu.{adopted}", tmp_path)
            orphan_id = held_job(f"{prefix}.cpu.{orphan_job}", tmp_path)  # no registration: cannot serve
            github.generate_jitconfig(stale, ["self-hosted", "slurm"], 1, "_work")  # no job backs it
            allocator.state.insert([(interrupted, "cpu")], 0.0)  # killed between JIT config and sbatch
            github.generate_jitconfig(interrupted, ["self-hosted", "slurm"], 1, "_work")
            actions = allocator.reconcile()
            rows = {row.name: row for row in allocator.state.all()}
        text = "\n".join(actions)
        assert f"adopted Slurm job {adopted_id} of runner {adopted}" in text
        assert f"cancelled Slurm job {orphan_id} of runner {orphan_job}: its GitHub runner is gone" in text
        assert f"deleted GitHub runner {stale}" in text and f"undid interrupted start {interrupted}" in text
        assert rows[adopted].phase is Phase.PENDING and rows[adopted].job_id == adopted_id
        assert rows[orphan_job].phase is Phase.CANCELLED and rows[interrupted].phase is Phase.FAILED
        assert [job_id for job_id, _, _ in our_jobs(prefix)] == [adopted_id]
        assert sorted(r.name for r in emulator.github.runners.values()) == [adopted]


def test_the_tasks_report_as_json_and_refuse_bad_settings_with_exit_2(prefix: str, tmp_path: Path) -> None:
    inv = str(Path(sys.executable).with_name("inv"))
    with Emulator() as emulator:
        emulator.add_run([{"labels": ["self-hosted", "slurm"]}, {"labels": ["windows"]}])
        section = {"github": {"api_url": emulator.url, "repository": emulator.github.repository},
                   "targets": [target("cpu", ["self-hosted", "slurm"])], "prefix": prefix}
        config = tmp_path / "runners.yaml"
        config.write_text(yaml.safe_dump({"ci": {"state_dir": str(tmp_path / "state"), "runners": section}}))
        env = {**os.environ, "CI_GITHUB_TOKEN": TOKEN}
        status = subprocess.run([inv, "-f", str(config), "runners.status", "--json"], cwd=PROJECT_DIR, env=env,
                                capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stderr
        data = json.loads(status.stdout)
        assert data["serving"] is None and data["targets"][0]["demand"] == 1
        assert [job["labels"] for job in data["unservable"]] == [["windows"]]
        assert data["rate_limit"]["remaining"] > 0 and TOKEN not in status.stdout + status.stderr
        no_token = subprocess.run([inv, "-f", str(config), "runners.status"], cwd=PROJECT_DIR,
                                  env={k: v for k, v in env.items() if k != "CI_GITHUB_TOKEN"},
                                  capture_output=True, text=True, check=False, timeout=60)
        assert no_token.returncode == 2 and "CI_GITHUB_TOKEN is not set" in no_token.stderr
        section["targets"] = [{"name": "cpu", "labels": [], "slurm": {"extra": ["--output=/tmp/x"]}}]
        config.write_text(yaml.safe_dump({"ci": {"state_dir": str(tmp_path / "state"), "runners": section}}))
        bad = subprocess.run([inv, "-f", str(config), "runners.serve"], cwd=PROJECT_DIR, env=env,
                             capture_output=True, text=True, check=False, timeout=60)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr
        assert "ci.runners.targets[0].labels" in bad.stderr and "ci.runners.targets[0].slurm.extra[0]" in bad.stderr
