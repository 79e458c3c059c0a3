"""Reading their test.sbatch, as lumi-containers-transfer.sh writes it: the resources every test got.

Their transfer script writes test.sbatch with a here-document; we expand it the way bash would for
the few forms it uses (plain assignments, `$((a * b))`), read its `#SBATCH` lines and the `srun ...
singularity exec -B ...` of its $SCMD, and keep only what our Resources model accepts: every value
left behind is a note that says why, never a silent drop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from ci.migrate.checkout import TRANSFER_SCRIPT
from ci.resources import Resources, check_sbatch_option
from ci.validation import problems_from, shown


@dataclass
class TestDefaults:
    """The resources their test.sbatch gave every test, and the binds of their $SCMD."""

    __test__ = False  # not a pytest class

    slurm: dict[str, Any] = field(default_factory=dict)
    binds: list[str] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (message, fix)


_HEREDOC = re.compile(r"^\s*cat\s*>\s*test\.sbatch\s*<<\s*(?P<q>['\"]?)(?P<end>\w+)(?P=q)\s*$")
_SIMPLE_ASSIGN = re.compile(r"^\s*(?P<name>[A-Za-z_]\w*)=(?P<value>[^\s`$()'\"]*|'[^']*'|\"[^\"`$]*\")\s*$")
_ARITH = re.compile(r"\$\(\((?P<expr>[^()]*)\)\)")
_VAR = re.compile(r"\$(?:\{(?P<b>[A-Za-z_]\w*)\}|(?P<p>[A-Za-z_]\w*))")
_SBATCH_VALUE_OPTIONS = {"-N": "nodes", "--nodes": "nodes", "-n": "ntasks", "--ntasks": "ntasks",
                         "-G": "gpus", "--gpus": "gpus", "-t": "time", "--time": "time", "--mem": "mem",
                         "-p": "partition", "--partition": "partition", "-c": "cpus_per_task",
                         "--cpus-per-task": "cpus_per_task"}
_SBATCH_OURS = {"-J", "--job-name", "-o", "--output", "-e", "--error", "-A", "--account"}
_EXTRA_FLAGS = {"--exclusive"}
_EXTRA_VALUES = {"--threads-per-core", "--ntasks-per-node", "--gpus-per-node", "--hint", "--constraint", "-C",
                 "--qos", "--reservation"}


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def _arith(expr: str, variables: dict[str, str]) -> str | None:
    text = _VAR.sub(lambda m: variables.get(m.group("b") or m.group("p") or "", "?"), expr)
    text = re.sub(r"[A-Za-z_]\w*", lambda m: variables.get(m.group(0), "?"), text)
    if not re.fullmatch(r"[0-9+\-* ()]+", text):
        return None
    total = 0
    for term in re.split(r"\s*\+\s*", text.strip()):
        product = 1
        for factor in re.split(r"\s*\*\s*", term):
            if not factor.strip().isdigit():
                return None
            product *= int(factor)
        total += product
    return str(total)


def _heredoc_expand(text: str, variables: dict[str, str]) -> str:
    """Expand a here-document body the way bash does for the few forms their script uses."""
    text = text.replace("\\\n", "")
    text = _ARITH.sub(lambda m: _arith(m.group("expr"), variables) or m.group(0), text)
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text) and text[index + 1] in "$`\\":
            out.append("\x00" + text[index + 1])  # escaped: expanded later, in the job
            index += 2
            continue
        match = _VAR.match(text, index)
        if match:
            name = match.group("b") or match.group("p") or ""
            out.append(variables[name] if name in variables else match.group(0))
            index = match.end()
            continue
        out.append(char)
        index += 1
    return "".join(out).replace("\x00", "")


def read_test_defaults(text: str) -> TestDefaults:
    """The resources and binds from the test.sbatch here-document of their transfer script."""
    defaults = TestDefaults()
    lines = text.splitlines()
    variables: dict[str, str] = {}
    start = end = -1
    for number, line in enumerate(lines):
        match = _HEREDOC.match(line)
        if match:
            start = number
            end = next((k for k in range(number + 1, len(lines)) if lines[k] == match.group("end")), -1)
            break
        assign = _SIMPLE_ASSIGN.match(line)
        if assign:
            variables[assign.group("name")] = _unquote(assign.group("value"))
    if start < 0 or end < 0:
        defaults.notes.append(("has no `cat > test.sbatch << EOF ... EOF` block",
                               "the tests get our default resources; set slurm: in container.yaml"))
        return defaults
    body = "\n".join(lines[start + 1:end])
    expanded = _heredoc_expand(body, variables).splitlines()
    job_variables: dict[str, str] = {}
    for line in expanded:
        assign = _SIMPLE_ASSIGN.match(line) or re.match(r"^\s*(?P<name>[A-Za-z_]\w*)=\"(?P<value>[^\"`]*)\"\s*$", line)
        if assign:
            job_variables[assign.group("name")] = _VAR.sub(
                lambda m: job_variables.get(m.group("b") or m.group("p") or "", m.group(0)),
                _unquote(assign.group("value")))
        if line.startswith("#SBATCH"):
            _sbatch_line(line[len("#SBATCH"):].split(), defaults)
    joined = " ".join(expanded)
    scmd = re.search(r"export\s+SCMD=\"(?P<value>[^\"]*)\"", joined)
    if scmd:
        value = _VAR.sub(lambda m: job_variables.get(m.group("b") or m.group("p") or "", m.group(0)),
                         scmd.group("value"))
        _scmd(value.split(), defaults)
    else:
        defaults.notes.append(("sets no SCMD in test.sbatch", "our SCMD comes from the site's scheduler and engine"))
    if "ntasks" not in defaults.slurm and "nodes" in defaults.slurm:
        defaults.slurm["ntasks"] = defaults.slurm["nodes"]
    order = ("nodes", "ntasks", "cpus_per_task", "gpus", "mem", "time", "partition", "extra")
    defaults.slurm = _valid_resources({key: defaults.slurm[key] for key in order if key in defaults.slurm},
                                      defaults)
    return defaults


def _valid_resources(slurm: dict[str, Any], defaults: TestDefaults) -> dict[str, Any]:
    """Keep what our Resources model accepts; each value it refuses is dropped with a note saying why."""
    kept = dict(slurm)
    extra: list[str] = []
    for option in kept.pop("extra", []):
        try:
            check_sbatch_option(option)
        except PydanticCustomError as exc:
            context = exc.context or {}
            defaults.notes.append((f"#SBATCH {option} of their test.sbatch is not carried over "
                                   f"({context.get('message', exc.message())})", str(context.get("fix", ""))))
            continue
        extra.append(option)
    if extra:
        kept["extra"] = extra
    for key in list(kept):
        try:
            Resources.model_validate({key: kept[key]} if key != "ntasks" else {"ntasks": kept[key]})
        except ValidationError as exc:
            for problem in problems_from(exc, file=TRANSFER_SCRIPT, prefix="slurm"):
                defaults.notes.append((f"their test.sbatch's {key} {shown(kept[key])} is not carried over "
                                       f"({problem.message})", problem.fix))
            del kept[key]
    try:
        Resources.model_validate(kept)
    except ValidationError as exc:
        for problem in problems_from(exc, file=TRANSFER_SCRIPT, prefix="slurm"):
            defaults.notes.append((f"their test.sbatch's resources are not carried over ({problem.message})",
                                   problem.fix))
        return {}
    return kept


def _sbatch_line(words: list[str], defaults: TestDefaults) -> None:
    index = 0
    while index < len(words):
        word = words[index]
        option, sep, inline = word.partition("=") if word.startswith("--") else (word, "", "")
        if option in _SBATCH_VALUE_OPTIONS or option in _EXTRA_VALUES or option in _SBATCH_OURS:
            if sep:
                value = inline
            elif index + 1 < len(words):
                index += 1
                value = words[index]
            else:
                value = ""
            if option in _SBATCH_VALUE_OPTIONS:
                key = _SBATCH_VALUE_OPTIONS[option]
                defaults.slurm[key] = int(value) if key in ("nodes", "ntasks", "gpus", "cpus_per_task") \
                    and value.isdigit() else value
            elif option in _EXTRA_VALUES:
                long = "--constraint" if option == "-C" else option
                defaults.slurm.setdefault("extra", []).append(f"{long}={value}")
        elif option in _EXTRA_FLAGS:
            defaults.slurm.setdefault("extra", []).append(option)
        else:
            defaults.notes.append((f"#SBATCH {word} of their test.sbatch is not carried over",
                                   "add it to the test's slurm.extra if the site needs it"))
        index += 1


def _scmd(words: list[str], defaults: TestDefaults) -> None:
    """`srun -N .. -n .. --cpu-bind=.. --gpus .. singularity exec -B a -B b`: tasks, CPU binding, binds."""
    if not words or words[0] != "srun":
        defaults.notes.append(("their SCMD does not start with srun", "our SCMD is the site scheduler's task launch"))
        return
    index = 1
    while index < len(words) and words[index].startswith("-"):
        word = words[index]
        option, sep, inline = word.partition("=")
        value = inline if sep else (words[index + 1] if index + 1 < len(words) else "")
        takes_value = option in ("-N", "--nodes", "-n", "--ntasks", "--gpus", "-G", "-c", "--cpus-per-task",
                                 "--cpu-bind")
        if option in ("-n", "--ntasks") and value.isdigit():
            defaults.slurm["ntasks"] = int(value)
        elif option == "--cpu-bind":
            defaults.notes.append((f"their SCMD binds tasks to CPUs with --cpu-bind={value}",
                                   "our launch has no CPU-binding field yet; the scheduler's default binding applies"))
        elif option in ("-c", "--cpus-per-task") and value.isdigit():
            defaults.slurm["cpus_per_task"] = int(value)
        elif option not in ("-N", "--nodes", "--gpus", "-G"):
            defaults.notes.append((f"srun {word} of their SCMD is not carried over", "add it to the test's resources"))
        index += 2 if takes_value and not sep else 1
    rest = words[index:]
    if rest[:2] in (["singularity", "exec"], ["apptainer", "exec"]):
        binds = rest[2:]
        position = 0
        while position < len(binds):
            if binds[position] in ("-B", "--bind") and position + 1 < len(binds):
                defaults.binds.extend(part for part in binds[position + 1].split(",") if part)
                position += 2
            else:
                defaults.notes.append((f"{rest[0]} exec {binds[position]} of their SCMD is not carried over",
                                       "add it to the site's engine settings"))
                position += 1
