"""Resources are hostile input: every value reaches a job script header or a scheduler command line.

Each refused value must be one Problem naming the field path and a fix, through the one formatter.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ci.resources import REFUSED_OPTIONS, SBATCH_OPTIONS, Resources, SlurmResources
from ci.validation import problems_from, shown

REFUSED: list[tuple[str, dict[str, Any], str, str]] = [
    ("zero-nodes", {"nodes": 0}, "slurm.nodes", "0 is below the minimum 1"),
    ("nodes-as-word", {"nodes": "two"}, "slurm.nodes", "expected a whole number, got a string"),
    ("nodes-as-boolean", {"nodes": True}, "slurm.nodes", "expected a whole number, got a boolean"),
    ("nodes-huge", {"nodes": 10**12}, "slurm.nodes", "is above the maximum"),
    ("fewer-tasks-than-nodes", {"nodes": 2, "ntasks": 1}, "slurm.ntasks", "1 tasks cannot fill 2 nodes"),
    ("negative-gpus", {"gpus": -1}, "slurm.gpus", "-1 is below the minimum 0"),
    ("time-in-words", {"time": "10 minutes"}, "slurm.time", "'10 minutes' is not a Slurm time limit"),
    ("time-trailing-newline", {"time": "00:10:00\n"}, "slurm.time", "contains a control character"),
    ("partition-newline", {"partition": "gpu\nrm -rf ~"}, "slurm.partition", "contains a control character"),
    ("partition-space", {"partition": "gpu x"}, "slurm.partition", "is not a valid partition name"),
    ("partition-too-long", {"partition": "p" * 2000}, "slurm.partition", "characters long"),
    ("mem-with-space", {"mem": "4 G"}, "slurm.mem", "is not a valid memory size"),
    ("extra-short-option", {"extra": ["--exclusive", "-N2"]}, "slurm.extra[1]", "'-N2' is not a long sbatch option"),
    ("extra-newline", {"extra": ["--exclusive\necho pwned"]}, "slurm.extra[0]", "contains a control character"),
    ("extra-space-value", {"extra": ["--mem 4G"]}, "slurm.extra[0]", "is not a long sbatch option"),
    ("extra-output", {"extra": ["--output=/home/user/.bashrc"]}, "slurm.extra[0]", "--output is not allowed"),
    ("extra-error", {"extra": ["--error=/tmp/x"]}, "slurm.extra[0]", "--error is not allowed"),
    ("extra-account", {"extra": ["--account=other"]}, "slurm.extra[0]", "--account is not allowed"),
    ("extra-wrap", {"extra": ["--wrap=id"]}, "slurm.extra[0]", "--wrap is not allowed"),
    ("extra-chdir", {"extra": ["--chdir=/"]}, "slurm.extra[0]", "--chdir is not allowed"),
    ("extra-export", {"extra": ["--export=ALL,LD_PRELOAD=/x"]}, "slurm.extra[0]", "--export is not allowed"),
    ("extra-partition", {"extra": ["--partition=gpu"]}, "slurm.extra[0]", "--partition is not allowed"),
    ("extra-unknown", {"extra": ["--frobnicate=1"]}, "slurm.extra[0]", "--frobnicate is not an sbatch option"),
    ("extra-flag-with-value", {"extra": ["--contiguous=yes"]}, "slurm.extra[0]", "--contiguous takes no value"),
    ("extra-without-value", {"extra": ["--qos"]}, "slurm.extra[0]", "--qos needs a value"),
    ("extra-bad-value", {"extra": ["--qos=a;b"]}, "slurm.extra[0]", "is not a valid value for --qos"),
    ("extra-twice", {"extra": ["--qos=a", "--qos=b"]}, "slurm", "--qos is given twice"),
    ("extra-as-string", {"extra": "--exclusive"}, "slurm.extra", "expected a list, got a string"),
    ("cpus-twice", {"cpus_per_task": 2, "extra": ["--cpus-per-task=4"]}, "slurm", "given in extra and as"),
    ("unknown-key", {"nodez": 1}, "slurm.nodez", "unknown key 'nodez'"),
]


@pytest.mark.parametrize(("raw", "field", "message"), [case[1:] for case in REFUSED], ids=[c[0] for c in REFUSED])
def test_refused_resources_name_field_message_and_fix(raw: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ValidationError) as raised:
        Resources.model_validate(raw)
    problems = problems_from(raised.value, file="container.yaml", prefix="slurm", model=Resources)
    assert any(p.field == field and message in p.message for p in problems), problems
    assert all(p.fix for p in problems)
    assert all("\n" not in str(p) for p in problems), "a problem is one line, whatever the input"


def test_unknown_key_suggests_the_closest_field() -> None:
    with pytest.raises(ValidationError) as raised:
        Resources.model_validate({"nodez": 1})
    (problem,) = problems_from(raised.value, file="c.yaml", model=Resources)
    assert "did you mean 'nodes'?" in problem.fix


@pytest.mark.parametrize("option", ["--exclusive", "--exclusive=user", "--mem=4G", "--mem-per-cpu=500M",
                                    "--constraint=mi250&amd", "--gres=gpu:a100:2", "--qos=debug",
                                    "--hint=nomultithread",
                                    "--threads-per-core=1", "--ntasks-per-node=8", "--gpus-per-node=8",
                                    "--reservation=maint", "--nodelist=nid[001-004]", "--cpus-per-task=7"])
def test_allowed_options_are_accepted(option: str) -> None:
    assert Resources(extra=(option,)).extra == (option,)


def test_every_option_is_either_allowed_or_refused_never_both() -> None:
    assert not set(SBATCH_OPTIONS) & set(REFUSED_OPTIONS)


def test_defaults_and_the_old_name() -> None:
    assert SlurmResources is Resources
    resources = Resources(time="1-00:00", partition="small,standard", cpus_per_task=7, mem="64G")
    assert (resources.nodes, resources.ntasks, resources.gpus, resources.extra) == (1, 1, 0, ())
    assert Resources.model_validate({"time": 10}).time == "10"
    with pytest.raises(ValidationError):
        resources.nodes = 2  # type: ignore[misc]  # frozen: a plan's resources never change under it


def test_shown_escapes_control_characters_and_cuts_long_values() -> None:
    assert shown("a\nb\x1b[31m") == "'a\\nb\\x1b[31m'"
    assert shown("x" * 200).endswith("…'")
