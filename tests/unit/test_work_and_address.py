"""gh.plan's per-image switches with recorded build failures, and the run's pinned site address."""

from __future__ import annotations

from pathlib import Path

import pytest

from ci.definitions import load_catalog
from ci.errors import SiteError
from ci.github.work import work_for
from ci.hosts import SSHSettings
from ci.pipeline.failures import BuildFailure, blocked_by
from ci.plan import make_plan
from ci.site.address import pinned, resolve
from ci.site.layout import SiteListing
from tests.support.definitions import definition


def test_images_built_on_a_failed_build_are_blocked_not_built(tmp_path: Path) -> None:
    definition(tmp_path, "base")
    definition(tmp_path, "mpi", dockerfile="FROM base\n")
    definition(tmp_path, "python", dockerfile="FROM mpi\n")
    definition(tmp_path, "tools", dockerfile="FROM base\n")
    catalog = load_catalog(tmp_path, ("amd64",))
    first = make_plan(catalog, site=SiteListing())
    mpi = first.images["amd64/mpi"]
    listing = SiteListing(failed={"mpi": {mpi.digest12}})
    plan = make_plan(catalog, site=listing)
    failures = {"amd64/mpi": BuildFailure("mpi", mpi.digest12, "gh-1-1", "docker build failed", "/site/log")}
    assert blocked_by(plan, failures) == {"amd64/python": "amd64/mpi"}
    work = {image.name: image for image in work_for(plan, failures).images}
    assert (work["mpi"].build, work["mpi"].test) == (False, False)
    assert "its build failed in run gh-1-1" in work["mpi"].reason and "/site/log" in work["mpi"].reason
    assert (work["python"].build, work["python"].test) == (False, False)
    assert work["python"].reason.startswith("blocked: mpi")
    assert (work["tools"].build, work["tools"].test) == (True, True)
    outputs = work_for(plan, failures).outputs()
    assert outputs["build-amd64-python"] == "false" and outputs["test-amd64-tools"] == "true"
    assert outputs["has_work"] == "true" and outputs["images"] == "base,tools"


def test_one_address_for_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve("localhost") in ("127.0.0.1", "::1")
    with pytest.raises(SiteError, match="cannot resolve the site host"):
        resolve("no-such-host.invalid")
    ssh = SSHSettings(host="lumi.example.org", user="me")
    monkeypatch.delenv("CI_SITE_ADDRESS", raising=False)
    assert pinned(ssh) is ssh
    monkeypatch.setenv("CI_SITE_ADDRESS", "193.166.1.7")
    assert pinned(ssh).host == "193.166.1.7" and pinned(ssh).user == "me"
    monkeypatch.setenv("CI_SITE_ADDRESS", "lumi.example.org; rm -rf /")
    with pytest.raises(SiteError, match="not an IP address"):
        pinned(ssh)
