"""tests/support stays the one home of what the tests share, and its HTTP emulator base behaves.

The suite is a package: a helper is imported as `tests.support...` (or `tests.<emulator>`), never
as a top-level module found through pytest's rootdir; the project's path, the reading of
invoke.yaml and the Slurm readiness check each exist once.
"""

from __future__ import annotations

import ast
import json
import re
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import pytest

from tests.support.http_emulator import Answer, HTTPEmulator, RequestLog, wait_until_listening
from tests.support.paths import PROJECT_DIR, TESTS_DIR

OLD_TOP_LEVEL = {"helpers", "site_helpers", "service_helpers", "lumi_layout", "workflow_model", "cloud_emulator",
                 "github_emulator", "integration", "unit", "e2e", "support", "conftest"}


def _python_files() -> list[Path]:
    return sorted([*TESTS_DIR.rglob("*.py"), *(PROJECT_DIR / "benchmarks").rglob("*.py")])


def _where(path: Path, node: ast.AST) -> str:
    return f"{path.relative_to(PROJECT_DIR)}:{getattr(node, 'lineno', 0)}"


def test_helpers_are_imported_as_packages_not_through_the_rootdir() -> None:
    found = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else \
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            found += [f"{_where(path, node)} imports {name}" for name in names if name.split(".")[0] in OLD_TOP_LEVEL]
    assert found == [], "import `tests.support...` (or `tests.cloud_emulator` ...) instead"


def test_every_test_folder_is_a_package() -> None:
    folders = {path.parent for path in TESTS_DIR.rglob("*.py") if "__pycache__" not in path.parts}
    assert sorted(str(f.relative_to(PROJECT_DIR)) for f in folders if not (f / "__init__.py").is_file()) == []


def test_the_project_path_and_invoke_yaml_are_found_in_one_place() -> None:
    own = {TESTS_DIR / "support" / "paths.py", TESTS_DIR / "support" / "config.py"}
    defined, read = [], []
    for path in _python_files():
        if path in own or path.parent == PROJECT_DIR / "benchmarks":
            continue
        text = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id in ("PROJECT_DIR", "PROJECT")
                                                    for t in node.targets):
                defined.append(_where(path, node))
        if re.search(r"__file__\)\.resolve\(\)\.(parents\[2\]|parent\.parent)", text):
            defined.append(str(path.relative_to(PROJECT_DIR)))
        if re.search(r"PROJECT(_DIR)? / \"invoke\.yaml\"", text):
            read.append(str(path.relative_to(PROJECT_DIR)))
    assert defined == [], "use tests.support.paths.PROJECT_DIR"
    assert read == [], "use tests.support.config.project_config()"


def test_service_readiness_is_checked_in_one_place() -> None:
    calls = [str(path.relative_to(PROJECT_DIR)) for path in sorted(TESTS_DIR.rglob("*.py"))
             if path != TESTS_DIR / "support" / "services.py"
             and re.search(r"\bslurm_ready\(", path.read_text(encoding="utf-8"))]
    assert calls == [], "use tests.support.services.require_slurm() (or the slurm_available fixture)"


def test_the_project_config_is_a_fresh_copy_each_time() -> None:
    from tests.support.config import project_config

    first = project_config()
    first["profiles"].clear()
    assert project_config()["profiles"], "a test's change to its copy reached the next reader"


# ---- the HTTP emulator base ------------------------------------------------------------------------


class Echo(HTTPEmulator[tuple[str, str, bytes]]):
    """The smallest emulator: logs each request and answers with what it was asked."""

    thread_name = "echo-emulator"

    def answer(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Answer:
        self.requests.append((method, target, body))
        if target == "/boom":
            return Answer(503, b"down", {"Retry-After": "1"})
        return Answer(200, json.dumps({"method": method, "target": target, "body": body.decode(),
                                       "agent": headers.get("User-Agent", "")}).encode(),
                      {"Content-Type": "application/json"})


def _call(url: str, data: bytes | None = None, method: str = "GET") -> tuple[int, bytes, dict[str, str]]:
    request = urllib.request.Request(url, data=data, method=method, headers={"User-Agent": "support-test"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read(), dict(response.headers.items())
    except urllib.error.HTTPError as error:
        return error.code, error.read(), dict(error.headers.items())


def test_an_emulator_serves_on_a_free_loopback_port_and_logs_each_request() -> None:
    with Echo() as echo:
        assert echo.host == "127.0.0.1" and echo.port > 0 and echo.url == f"http://127.0.0.1:{echo.port}"
        status, body, _ = _call(f"{echo.url}/a?b=1", b'{"x": 1}', "PUT")
        assert status == 200
        assert json.loads(body) == {"method": "PUT", "target": "/a?b=1", "body": '{"x": 1}', "agent": "support-test"}
        status, body, headers = _call(f"{echo.url}/boom", method="DELETE")
        assert (status, body, headers["Retry-After"], headers["Content-Length"]) == (503, b"down", "1", "4")
        assert echo.requests == [("PUT", "/a?b=1", b'{"x": 1}'), ("DELETE", "/boom", b"")]
    with pytest.raises(OSError):
        _call(f"{echo.url}/after-stop")
    assert len(echo.requests) == 2, "the log stays readable after stop"


def test_two_emulators_get_two_ports_and_stop_without_starting() -> None:
    first, second = Echo(), Echo()
    try:
        assert first.port != second.port
    finally:
        first.stop()
        second.stop()


def test_the_request_log_keeps_the_newest_entries_when_bounded() -> None:
    log: RequestLog[int] = RequestLog(limit=3)
    for number in range(10):
        log.append(number)
    assert log == [7, 8, 9] and log[-1] == 9 and log[1:] == [8, 9]
    unbounded: RequestLog[int] = RequestLog()
    for number in range(5000):
        unbounded.append(number)
    assert len(unbounded) == 5000


def test_readiness_names_the_address_when_nothing_listens() -> None:
    echo = Echo()
    port = echo.port
    echo.stop()  # the port is free again: nothing accepts connections on it
    with pytest.raises(TimeoutError, match=rf"127\.0\.0\.1:{port} within 0\.3s"):
        wait_until_listening("127.0.0.1", port, timeout=0.3)


# ---- the suite's warning policy (pyproject.toml's filterwarnings) ----------------------------------


def _outcome(message: str, category: type[Warning], module: str) -> str:
    """What the suite's filters do with a warning attributed to `module`: "error", "ignored" or "shown"."""
    with warnings.catch_warnings(record=True) as shown:  # keeps the filters, records what they let through
        try:
            warnings.warn_explicit(message, category, f"{module.replace('.', '/')}.py", 1, module=module)
        except Warning:
            return "error"
    return "shown" if shown else "ignored"


def test_a_warning_from_our_modules_fails_the_test() -> None:
    assert _outcome("datetime.utcnow() is deprecated", DeprecationWarning, "ci.openstack.cloud") == "error"
    assert _outcome("anything at all", UserWarning, "ci") == "error"
    assert _outcome("a library's own deprecation", DeprecationWarning, "cinderclient.v3") == "shown"


def test_only_the_sdk_s_internal_deprecations_are_ignored_and_our_call_forms_fail() -> None:
    assert _outcome("This method was called with a volume_id or volumeId argument. This is legacy behavior",
                    PendingDeprecationWarning, "openstack.compute.v2._proxy") == "error"
    for internal in ("The _compute_attributes method is deprecated for removal",
                     "The 'service_type' parameter is unnecesary and will be removed in a future release.",
                     "The ignore_missing parameter of all find_* proxy methods is deprecated for removal"):
        assert _outcome(internal, PendingDeprecationWarning, "openstack.resource") == "ignored"
    assert _outcome("A new deprecation in the SDK", PendingDeprecationWarning, "openstack.proxy") == "shown"


@pytest.mark.parametrize(("states", "takes_jobs"), [
    (["idle"], True), (["mix"], True), (["alloc"], True), (["comp"], True),
    (["plnd"], True),  # IDLE+PLANNED: backfill set it aside for a pending job; it still runs jobs
    (["idle~"], True), ([], False), (["idle*"], False), (["down"], False), (["drain"], False),
    (["drng"], False), (["idle", "down*"], False), (["unk"], False),
])
def test_the_slurm_readiness_check_reads_sinfos_short_states(states: list[str], takes_jobs: bool) -> None:
    from ci.local.services import nodes_take_jobs

    assert nodes_take_jobs(states) is takes_jobs
