"""What a job asks of a scheduler, neutral of the scheduler, and checked as hostile input.

Every value here ends up in a job script header (`#SBATCH --partition=...`) or on a scheduler's
command line, so each one is held to a strict grammar: no control characters (a newline in a
partition name would add a shell line to the job script), `\\Z`-anchored patterns, lengths that fit
Slurm. `extra` is an allow-list of sbatch long options, each rendered as one directive line;
options that would let a definition write files (`--output`), charge another account, wrap a
command or change the job's environment are refused with the field to use instead.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ci.validation import check_text, has_control, invalid, shown

# Slurm's accepted --time forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S, plus the unlimited words.
_SLURM_TIME = re.compile(r"\A(\d{1,7}-\d{1,2}(:\d{1,2}(:\d{1,2})?)?|\d{1,9}(:\d{1,2}(:\d{1,2})?)?)\Z")
_SLURM_UNLIMITED = frozenset({"UNLIMITED", "INFINITE", "unlimited", "infinite"})
_TIME_FIX = "use MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS, e.g. \"00:10:00\""
_MEMORY = re.compile(r"\A[0-9]{1,12}[KMGTkmgt]?\Z")
_SLURM_NAME = r"[A-Za-z0-9_.+-]{1,64}"  # Slurm keeps partition, QOS and reservation names short
_PARTITION = re.compile(rf"\A{_SLURM_NAME}(,{_SLURM_NAME}){{0,15}}\Z")
_MAX_COUNT = 1_000_000
_MAX_OPTION = 512

# sbatch long options a definition may add, with the grammar of their value (None: a flag without value).
_VALUE_GRAMMARS: dict[str, str] = {
    "count": r"[0-9]{1,7}",
    "size": r"[0-9]{1,12}[KMGTkmgt]?",
    "name": _SLURM_NAME,
    "names": rf"{_SLURM_NAME}(,{_SLURM_NAME}){{0,15}}",
    "features": r"[A-Za-z0-9_.,:&|\[\]()*!-]{1,256}",
    "gres": r"[A-Za-z0-9_.,:/+=-]{1,256}",
    "gpus": r"([A-Za-z0-9_.-]{1,64}:)?[0-9]{1,6}",
    "hostlist": r"[A-Za-z0-9_.,\[\]-]{1,1024}",
    "binding": r"[A-Za-z0-9_.,:=-]{1,256}",
    "hint": r"(compute_bound|memory_bound|multithread|nomultithread)",
    "exclusive": r"(user|mcs|topo)",
    "switches": r"[0-9]{1,6}(@[0-9:-]{1,20})?",
    "signal": r"((R|B|RB):)?[A-Z0-9]{1,10}(@[0-9]{1,6})?",
}
SBATCH_OPTIONS: dict[str, tuple[str | None, bool]] = {
    # option: (value grammar, value optional)
    "cpus-per-task": ("count", False), "cpus-per-gpu": ("count", False), "mincpus": ("count", False),
    "mem": ("size", False), "mem-per-cpu": ("size", False), "mem-per-gpu": ("size", False), "tmp": ("size", False),
    "constraint": ("features", False), "prefer": ("features", False),
    "gres": ("gres", False), "gres-flags": ("name", False), "licenses": ("gres", False),
    "exclusive": ("exclusive", True), "oversubscribe": (None, False), "overcommit": (None, False),
    "contiguous": (None, False), "spread-job": (None, False), "use-min-nodes": (None, False),
    "qos": ("name", False), "reservation": ("names", False), "hint": ("hint", False),
    "threads-per-core": ("count", False), "cores-per-socket": ("count", False),
    "sockets-per-node": ("count", False), "ntasks-per-node": ("count", False),
    "ntasks-per-socket": ("count", False), "ntasks-per-core": ("count", False), "ntasks-per-gpu": ("count", False),
    "gpus-per-node": ("gpus", False), "gpus-per-task": ("gpus", False), "gpus-per-socket": ("gpus", False),
    "gpu-bind": ("binding", False), "mem-bind": ("binding", False), "cpu-freq": ("binding", False),
    "distribution": ("binding", False), "network": ("binding", False),
    "exclude": ("hostlist", False), "nodelist": ("hostlist", False), "switches": ("switches", False),
    "core-spec": ("count", False), "thread-spec": ("count", False), "nice": ("count", False),
    "signal": ("signal", False), "requeue": (None, False), "no-requeue": (None, False),
}
_FIELD_INSTEAD = "the test's own field; remove the option"
REFUSED_OPTIONS: dict[str, str] = {
    "output": "the CI chooses the job's output file; remove the option",
    "error": "the CI chooses the job's output file; remove the option",
    "input": "a test job reads no input file; remove the option",
    "open-mode": "the CI chooses how the output file is written; remove the option",
    "account": "the site's account comes from ci.site.account in the settings; remove the option",
    "wrap": "the CI writes the job script itself; put commands into the test script",
    "chdir": "the CI chooses the job's working folder; remove the option",
    "export": "the CI sets the job's environment; set variables in the test script",
    "export-file": "the CI sets the job's environment; set variables in the test script",
    "get-user-env": "the CI sets the job's environment; set variables in the test script",
    "propagate": "the CI sets the job's environment and limits; remove the option",
    "job-name": "the CI names the jobs it adopts; remove the option",
    "array": "one test is one job; write several tests instead",
    "dependency": "the CI orders the jobs itself; remove the option",
    "partition": "use slurm.partition, " + _FIELD_INSTEAD,
    "time": "use slurm.time, " + _FIELD_INSTEAD,
    "nodes": "use slurm.nodes, " + _FIELD_INSTEAD,
    "ntasks": "use slurm.ntasks, " + _FIELD_INSTEAD,
    "gpus": "use slurm.gpus, " + _FIELD_INSTEAD,
    "uid": "jobs run as the site user; remove the option",
    "gid": "jobs run as the site user; remove the option",
    "mail-user": "the CI reports results itself; remove the option",
    "mail-type": "the CI reports results itself; remove the option",
    "hold": "the CI waits for the job; remove the option",
    "wait": "the CI waits for the job; remove the option",
    "parsable": "the CI reads sbatch's answer itself; remove the option",
    "test-only": "the CI submits the job for real; remove the option",
    "container": "the CI runs the image itself; remove the option",
    "begin": "the CI waits for the job; remove the option",
    "deadline": "the CI waits for the job; remove the option",
    "comment": "the CI labels its jobs itself; remove the option",
    "clusters": "the site profile names the cluster; remove the option",
}
_OPTION = re.compile(r"\A--(?P<name>[a-z][a-z-]{0,40})(?P<eq>=(?P<value>.*))?\Z", re.DOTALL)


def _allowed_list() -> str:
    return ", ".join(f"--{name}" for name in sorted(SBATCH_OPTIONS))


def check_sbatch_option(option: str) -> str:
    """One `extra` entry: an allowed long option with a value in that option's grammar."""
    if has_control(option):
        raise invalid(f"{shown(option)} contains a control character",
                      "write one option per list entry, without line breaks")
    if len(option) > _MAX_OPTION:
        raise invalid(f"the option is {len(option)} characters long (at most {_MAX_OPTION})", "shorten it")
    if not option.startswith("--"):
        raise invalid(f"{shown(option)} is not a long sbatch option", "write extra options in the --name=value form")
    match = _OPTION.match(option)
    if match is None:
        raise invalid(f"{shown(option)} is not a long sbatch option",
                      "write extra options in the --name=value form (a space between name and value is not allowed)")
    name, value = match.group("name"), match.group("value")
    if name in REFUSED_OPTIONS:
        raise invalid(f"--{name} is not allowed in slurm.extra", REFUSED_OPTIONS[name])
    if name not in SBATCH_OPTIONS:
        raise invalid(f"--{name} is not an sbatch option the CI allows in slurm.extra",
                      f"use one of {_allowed_list()}")
    grammar, optional = SBATCH_OPTIONS[name]
    if grammar is None:
        if match.group("eq") is not None:
            raise invalid(f"--{name} takes no value", f"write it as --{name}")
        return option
    if value is None:
        if optional:
            return option
        raise invalid(f"--{name} needs a value", f"write it as --{name}=VALUE")
    if not re.fullmatch(_VALUE_GRAMMARS[grammar], value):
        raise invalid(f"{shown(value)} is not a valid value for --{name}",
                      f"write --{name}= with {_GRAMMAR_WORDS[grammar]}")
    return option


_GRAMMAR_WORDS = {
    "count": "a whole number", "size": "a size such as 4G or 500M", "name": "a Slurm name (letters, digits, ._+-)",
    "names": "Slurm names separated by commas", "features": "a feature expression (letters, digits, &|,:[]()*!)",
    "gres": "a resource list such as gpu:2 or gpu:a100:1", "gpus": "a count, optionally typed (a100:2)",
    "hostlist": "a host list such as nid[001-004]", "binding": "a binding such as closest or map_gpu:0,1",
    "hint": "compute_bound, memory_bound, multithread or nomultithread", "exclusive": "user, mcs or topo (or none)",
    "switches": "a count, optionally @time", "signal": "a signal such as USR1@60",
}


def is_valid_slurm_time(value: str) -> bool:
    return value in _SLURM_UNLIMITED or bool(_SLURM_TIME.match(value))


def _time_as_text(value: Any) -> Any:
    """`time: 10` in YAML means ten minutes to Slurm; keep it as text."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value


SbatchOption = Annotated[str, AfterValidator(check_sbatch_option)]
Count = Annotated[int, Field(strict=True, ge=1, le=_MAX_COUNT)]


class Resources(BaseModel):
    """What a job asks of the scheduler: written `slurm:` in container.yaml, rendered by each scheduler."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nodes: Count = 1
    ntasks: Count = 1
    cpus_per_task: Count | None = None
    mem: str | None = Field(default=None, description="memory per node, e.g. 4G (Slurm --mem)")
    time: Annotated[str, BeforeValidator(_time_as_text), WithJsonSchema({"type": ["string", "integer"]})] = Field(
        default="00:10:00", description="Slurm time limit: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS")
    partition: str | None = None
    gpus: Annotated[int, Field(strict=True, ge=0, le=_MAX_COUNT)] = 0
    extra: tuple[SbatchOption, ...] = Field(default=(), description="allowed sbatch long options, e.g. --exclusive")

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        check_text(value, what="Slurm time limit", max_length=20, fix=_TIME_FIX)
        if not is_valid_slurm_time(value):
            raise invalid(f"{shown(value)} is not a Slurm time limit", _TIME_FIX)
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None:
            check_text(value, what="memory size", max_length=14, pattern=_MEMORY,
                       fix="write a whole number with an optional K, M, G or T, e.g. 4G")
        return value

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str | None) -> str | None:
        if value is not None:
            check_text(value, what="partition name", max_length=1024, pattern=_PARTITION,
                       fix="use the partition's name as `sinfo -s` lists it (letters, digits, '._+-')")
        return value

    @field_validator("ntasks")
    @classmethod
    def _fills_nodes(cls, value: int, info: ValidationInfo) -> int:
        nodes = info.data.get("nodes")
        if isinstance(nodes, int) and value < nodes:
            raise invalid(f"{value} tasks cannot fill {nodes} nodes", "ask for at least one task per node")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Resources:
        names = [option.split("=", 1)[0] for option in self.extra]
        for name in names:
            if names.count(name) > 1:
                raise invalid(f"{name} is given twice in extra", "keep one of them")
        if self.cpus_per_task is not None and "--cpus-per-task" in names:
            raise invalid("--cpus-per-task is given in extra and as cpus_per_task", "keep cpus_per_task only")
        if self.mem is not None and "--mem" in names:
            raise invalid("--mem is given in extra and as mem", "keep mem only")
        return self


# The old name, kept until every caller says Resources.
SlurmResources = Resources
