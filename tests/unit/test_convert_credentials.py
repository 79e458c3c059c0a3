"""The convert step hands the registry login to the site's engine on stdin, never on a command line."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from ci.config.settings import RegistrySettings
from ci.definitions import load_catalog
from ci.docker.registry import Registry
from ci.engines import make_engine
from ci.hosts import CommandResult, LocalHost
from ci.pipeline.runs import RunFolder
from ci.pipeline.steps import Chain, ConvertStep, SiteServices
from ci.plan import make_plan
from ci.site.layout import Site
from tests.support.paths import EXAMPLES

CANARY = "canary-token-5f1d"


class ConvertingHost(LocalHost):
    """This machine, except that `apptainer` (not installable here) is played by writing the file."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, command: Sequence[str], *, env: Mapping[str, str] | None = None, stdin: str | None = None,
            timeout: float | None = None, check: bool = True, cwd: str | None = None) -> CommandResult:
        argv = [str(part) for part in command]
        self.calls.append((argv, stdin))
        if "apptainer" in argv:
            Path(next(arg for arg in argv if arg.endswith(".part"))).write_text("sif")
            return CommandResult(tuple(argv), 0, "", "")
        return super().run(argv, env=env, stdin=stdin, timeout=timeout, check=check, cwd=cwd)


def _convert(tmp_path: Path, host: ConvertingHost) -> ConvertStep:
    plan = make_plan(load_catalog(EXAMPLES), only=["base"])
    image = plan.images["amd64/base"]
    services = SiteServices(site=Site(host, str(tmp_path / "site")), registry=Registry(RegistrySettings(), None, host),
                            engine=make_engine("apptainer"), scheduler=None, watcher=None,  # type: ignore[arg-type]
                            job_prefix="cci")
    return ConvertStep(Chain(image, RunFolder(tmp_path / "runs", "run-1"), services, {"transfer": {
        "digest": image.digest, "reference": "127.0.0.1:5000/base:x"}}))


def test_the_registry_token_reaches_the_engine_on_stdin_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI_REGISTRY_USER", "robot")
    monkeypatch.setenv("CI_REGISTRY_TOKEN", CANARY)
    host = ConvertingHost()
    result = _convert(tmp_path, host)()
    assert not result.failed and Path(result.data["image_file"]).read_text() == "sif"
    ((_argv, stdin),) = [(argv, stdin) for argv, stdin in host.calls if "apptainer" in argv]
    assert not any(CANARY in arg for command, _ in host.calls for arg in command)
    assert stdin is not None and f"APPTAINER_DOCKER_PASSWORD={CANARY}" in stdin
    assert "APPTAINER_DOCKER_USERNAME=robot" in stdin


def test_without_a_login_nothing_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI_REGISTRY_USER", raising=False)
    monkeypatch.delenv("CI_REGISTRY_TOKEN", raising=False)
    host = ConvertingHost()
    _convert(tmp_path, host)()
    (stdin,) = [stdin for argv, stdin in host.calls if "apptainer" in argv]
    assert not stdin
