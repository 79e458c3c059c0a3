"""The convert step records the image file's size, md5 and sha256, on the site host, in its step data
(kept for a resumed run), for promotion to file in result.json and publishing to check against."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from ci.config.settings import RegistrySettings
from ci.definitions import load_catalog
from ci.docker.registry import Registry
from ci.engines import make_engine
from ci.errors import SiteError
from ci.hosts import CommandResult, LocalHost
from ci.pipeline.runs import RunFolder
from ci.pipeline.steps import Chain, ConvertStep, SiteServices
from ci.pipeline.steps.convert import CHECKSUM_FIELDS, checksum_command, file_checksums, parse_checksums
from ci.plan import make_plan
from ci.site.layout import Site
from tests.support.paths import EXAMPLES

CONTENT = b"a converted image\n" * 1000


class ConvertingHost(LocalHost):
    """This machine, except that `apptainer` (not installable here) is played by writing the file."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = [str(part) for part in command]
        self.calls.append(argv)
        if "apptainer" in argv:
            Path(next(arg for arg in argv if arg.endswith(".part"))).write_bytes(CONTENT)
            return CommandResult(tuple(argv), 0, "", "")
        return super().run(argv, env=env, stdin=stdin, timeout=timeout, check=check, cwd=cwd)


def _step(tmp_path: Path, host: ConvertingHost, previous: Mapping[str, Mapping[str, Any]] | None = None
          ) -> ConvertStep:
    plan = make_plan(load_catalog(EXAMPLES), only=["base"])
    image = plan.images["amd64/base"]
    services = SiteServices(site=Site(host, str(tmp_path / "site")), registry=Registry(RegistrySettings(), None, host),
                            engine=make_engine("apptainer"), scheduler=None, watcher=None,  # type: ignore[arg-type]
                            job_prefix="cci")
    steps = {"transfer": {"digest": image.digest, "reference": "127.0.0.1:5000/base:x"},
             **{name: {"digest": image.digest, **data} for name, data in (previous or {}).items()}}
    return ConvertStep(Chain(image, RunFolder(tmp_path / "runs", "run-1"), services, steps))


def _expected(data: bytes) -> dict[str, Any]:
    return {"image_file_size": len(data), "image_file_md5": hashlib.md5(data).hexdigest(),
            "image_file_sha256": hashlib.sha256(data).hexdigest()}


def test_a_conversion_records_the_files_checksums_for_promotion(tmp_path: Path) -> None:
    host = ConvertingHost()
    step = _step(tmp_path, host)
    result = step()
    assert {key: result.data[key] for key in CHECKSUM_FIELDS} == _expected(CONTENT)
    assert step.chain.image_file_checksums == _expected(CONTENT)
    (command,) = [argv for argv in host.calls if argv[:2] == ["sh", "-c"]]
    assert command[-2:] == [result.data["image_file"], str(16 * 1024 * 1024)], "the path is an argument of its own"


def test_a_resumed_step_takes_the_recorded_checksums_without_reading_the_file(tmp_path: Path) -> None:
    host = ConvertingHost()
    recorded = {"image_file": "/nowhere/x.sif", **_expected(b"tested")}
    step = _step(tmp_path, host, {"convert": recorded})
    step()
    assert step.chain.image_file_checksums == _expected(b"tested") and host.calls == []
    older = _step(tmp_path, host, {"convert": {"image_file": "/nowhere/x.sif"}})  # recorded before checksums were
    older()
    assert older.chain.image_file_checksums == {}


def test_a_file_converted_by_a_killed_attempt_gets_its_checksums(tmp_path: Path) -> None:
    host = ConvertingHost()
    step = _step(tmp_path, host)
    assert step.chain.image_file is not None
    Path(step.chain.image_file).parent.mkdir(parents=True)
    Path(step.chain.image_file).write_bytes(b"left by a killed attempt")
    result = step()
    assert "already converted" in result.detail
    assert step.chain.image_file_checksums == _expected(b"left by a killed attempt")


@pytest.mark.parametrize("name", ["plain.sif", "a b.sif", "$(touch pwned).sif", "back\\slash.sif", "it's.sif",
                                  "-n.sif"])
def test_the_checksums_of_a_hostile_file_name_are_read_and_nothing_runs(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(CONTENT)
    assert file_checksums(LocalHost(), str(path)) == _expected(CONTENT)
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
    assert str(path) not in checksum_command(str(path))[2], "the path is never part of the script"


def test_a_folder_records_nothing_and_a_missing_tool_is_one_clear_error(tmp_path: Path) -> None:
    assert file_checksums(LocalHost(), str(tmp_path)) == {}
    with pytest.raises(SiteError, match="md5sum, sha256sum and stat"):
        parse_checksums("sh: 1: md5sum: not found\n")
    with pytest.raises(SiteError):
        parse_checksums(f"12\n{'a' * 32}  f\n{'b' * 32}  f\n")


@pytest.mark.parametrize(("size", "part_size", "parts"), [
    (18000, 4096, 5), (16384, 4096, 4), (4096, 4096, 0),  # one part: its md5 is the file's
    (20001, 2, 0),  # over S3's 10,000 parts: none recorded (publishing hashes them)
])
def test_the_md5_of_each_part_is_recorded_as_a_multipart_upload_sends_it(
        tmp_path: Path, size: int, part_size: int, parts: int) -> None:
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    path = tmp_path / "it's a $(file).sif"
    path.write_bytes(data)
    run = LocalHost().run(checksum_command(str(path), part_size))
    recorded = parse_checksums(run.stdout, part_size)
    assert {key: recorded[key] for key in CHECKSUM_FIELDS} == _expected(data)
    if parts:
        assert recorded["image_file_part_size"] == part_size
        assert recorded["image_file_part_md5s"] == [hashlib.md5(data[at:at + part_size]).hexdigest()
                                                    for at in range(0, size, part_size)]
    else:
        assert "image_file_part_md5s" not in recorded and "image_file_part_size" not in recorded


@pytest.mark.parametrize("parts", [["part:" + "a" * 32], ["part:" + "a" * 31] * 2, ["part:" + "g" * 32] * 2,
                                   ["part:part:failed"]])
def test_parts_that_are_not_all_there_are_left_out_and_the_rest_is_kept(parts: list[str]) -> None:
    """A split without --filter, or a line cut short, costs the parts' md5s only: publishing hashes them."""
    stdout = "\n".join([*parts, "10", f"{'a' * 32}  f", f"{'b' * 64}  f"]) + "\n"
    recorded = parse_checksums(stdout, part_size=5)
    assert recorded == {"image_file_size": 10, "image_file_md5": "a" * 32, "image_file_sha256": "b" * 64}
