"""Host-side tests (`run: host`) in the LUMI containers CI's style, end to end on the local default.

The test script runs in the Slurm job on the node, in its own working folder, with the image file
as `$1` and `$SCMD` the launcher (srun for the test's tasks + Charliecloud behind the
`singularity exec` grammar). Like LUMI's `.test` files it writes a helper script into its working
folder, binds that folder into the container (`-B $(pwd):/myrun`) and calls `$SCMD` twice with
different environment. The passing one lands in tested/, its failing twin in failed/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.site_helpers import SiteProject, image_report, isolated_project

pytestmark = [pytest.mark.docker, pytest.mark.slurm, pytest.mark.registry]

LUMI_STYLE = r"""#!/bin/bash -e

cat > run.sh << EOF
#!/bin/sh
echo "rank \$SLURM_PROCID of \$SLURM_NTASKS: flavour \$FLAVOUR on debian \$(cat /etc/debian_version)"
EOF
chmod +x run.sh

FLAVOUR=first $SCMD -B $(pwd):/myrun $1 /myrun/run.sh
FLAVOUR=second $SCMD \
    -B $(pwd):/myrun \
    $1 \
    {second}
echo "Test success!!! --> $(ls)"
"""


def add_lumi_style(project: SiteProject, name: str, second: str) -> None:
    folder = project.add(name, extra="RUN mkdir /myrun\n")
    (folder / "tests" / "check.test").write_text(LUMI_STYLE.replace("{second}", second), encoding="utf-8")
    meta = {"version": "1.0", "tests": [{
        "name": "check", "script": "tests/check.test", "run": "host",
        "slurm": {"nodes": 1, "ntasks": 2, "time": "00:05:00"},
        "expect": {"exit_code": 0, "patterns": ["Test success!!! -->", r"rank 1 of 2: flavour second on debian 12"]}}]}
    (folder / "container.yaml").write_text(yaml.safe_dump(meta, sort_keys=False), encoding="utf-8")


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SiteProject, object]]:
    for project in isolated_project(tmp_path_factory.mktemp("host-tests")):
        add_lumi_style(project, "lumistyle", "/myrun/run.sh")
        add_lumi_style(project, "lumitwin", "/myrun/missing.sh")
        yield project, project.run()


def test_a_lumi_style_host_test_passes_end_to_end(outcome: tuple[SiteProject, object]) -> None:
    project, report = outcome
    image = image_report(report, "lumistyle")  # type: ignore[arg-type]
    assert image.state == "done", image.detail
    (folder,) = Path(project.site_root, "tested", "lumistyle").iterdir()
    log = (folder / "logs" / "check.out").read_text()
    for rank in (0, 1):
        for flavour in ("first", "second"):
            assert f"rank {rank} of 2: flavour {flavour} on debian 12" in log, log
    work = folder / "work" / "check"
    assert (work / "run.sh").is_file(), "the helper was written into the test's own working folder"
    assert "Test success!!! --> run.sh" in log
    script = (folder / "check.job.sh").read_text()
    assert "export SCMD='srun --nodes=1 --ntasks=2 bash " in script and "#SBATCH --ntasks=2" in script
    result = json.loads((folder / "result.json").read_text())
    assert result["verdict"] == "tested" and result["tests"][0]["passed"]


def test_its_failing_twin_lands_in_failed(outcome: tuple[SiteProject, object]) -> None:
    project, report = outcome
    image = image_report(report, "lumitwin")  # type: ignore[arg-type]
    assert image.state == "failed"
    (folder,) = Path(project.site_root, "failed", "lumitwin").iterdir()
    result = json.loads((folder / "result.json").read_text())
    (test,) = result["tests"]
    assert not test["passed"] and test["exit_code"] != 0
    assert any("does not appear" in reason for reason in test["reasons"])
    assert not Path(project.site_root, "tested", "lumitwin").exists()
