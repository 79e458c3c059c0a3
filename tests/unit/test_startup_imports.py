"""What a task pays before it does anything: the heavy libraries stay out until a step needs them.

A no-op `inv build-all` must answer in under a second (benchmarks/cli_bench.py); python-on-whales
(0.4 s), httpx (70 ms, it pulls rich and pygments for its own CLI), boto3, openstacksdk and fabric
each used to be imported by every run. These tests name the module that brings one back.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support.paths import PROJECT_DIR

HEAVY = ("python_on_whales", "httpx", "boto3", "openstack", "fabric", "paramiko", "fastapi", "sqlalchemy")

_PROBE = """
import json, sys
for name in sys.argv[2:]:
    __import__(name)
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[1].split(",")))))
"""


def _heavy_after(*modules: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", _PROBE, ",".join(HEAVY), *modules], capture_output=True,
                            text=True, timeout=120, check=True, cwd=PROJECT_DIR)
    return list(json.loads(result.stdout))


def test_the_task_list_loads_no_library() -> None:
    assert _heavy_after("tasks") == []


def test_the_pipeline_api_loads_no_heavy_library() -> None:
    """`ci.api` is what `inv build-all` imports; what a step needs is imported when the step runs."""
    assert _heavy_after("ci.api") == []


def test_the_probe_sees_a_heavy_library() -> None:
    """The two tests above cannot pass by accident: importing a client module is seen."""
    assert "httpx" in _heavy_after("ci.docker.oci")
