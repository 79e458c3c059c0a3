"""Stand-in for the GitHub Actions runner (`run.sh`), started by a real Slurm job in the tests.

Like the real runner given a just-in-time config, it reads ACTIONS_RUNNER_INPUT_JITCONFIG, connects
to "GitHub" (the emulator named inside the config), takes one job (any queued job whose labels
its own contain, as GitHub assigns them), runs it, reports it complete and exits: it is
ephemeral. It never prints the config. Standard library only: it runs with any python3.

A job's `steps` (shell commands, set with the emulator's `steps`) run one after another with
`sh -c` in the work folder the config names (made if missing), as the real runner runs `run:`
steps; the first failing step fails the job (conclusion "failure").

Environment: STANDIN_MAX_WAIT (seconds to wait for a job before exiting, default 300),
STANDIN_FAIL_MARKER (a file: if it exists, remove it and exit 3 before connecting, so a test
can make exactly one job die before its runner connects).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any


def call(url: str, data: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(data).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        body = response.read()
    return json.loads(body) if body else {}


def run_steps(steps: list[str], work_folder: str) -> str:
    """Each step with `sh -c` in the work folder; "failure" at the first that fails."""
    if not steps:
        return "success"
    os.makedirs(work_folder, exist_ok=True)
    for number, step in enumerate(steps, 1):
        print(f"stand-in runner: step {number}: {step}", flush=True)
        if subprocess.run(["sh", "-c", step], cwd=work_folder, check=False).returncode != 0:
            print(f"stand-in runner: step {number} failed", flush=True)
            return "failure"
    return "success"


def main() -> int:
    marker = os.environ.get("STANDIN_FAIL_MARKER", "")
    if marker and os.path.exists(marker):
        os.remove(marker)
        print("stand-in runner: failing before connecting, as the test asked", file=sys.stderr)
        return 3
    encoded = os.environ.pop("ACTIONS_RUNNER_INPUT_JITCONFIG", "")
    if not encoded:
        print("stand-in runner: ACTIONS_RUNNER_INPUT_JITCONFIG is not set", file=sys.stderr)
        return 2
    config = json.loads(base64.b64decode(encoded))
    base, secret = config["url"], config["secret"]
    me = call(f"{base}/_emulator/runner/connect", {"secret": secret})
    print(f"stand-in runner {me['name']} connected with labels {','.join(me['labels'])}", flush=True)
    deadline = time.monotonic() + float(os.environ.get("STANDIN_MAX_WAIT", "300"))
    while time.monotonic() < deadline:
        answer = call(f"{base}/_emulator/runner/acquire", {"secret": secret})
        job = answer.get("job")
        if job:
            print(f"stand-in runner {me['name']} took job {job['id']} ({job['name']}, labels "
                  f"{','.join(job['labels'])})", flush=True)
            time.sleep(float(answer.get("duration") or 0))
            conclusion = run_steps(answer.get("steps") or [], str(config.get("work_folder") or "_work"))
            call(f"{base}/_emulator/runner/complete", {"secret": secret, "job_id": job["id"],
                                                       "conclusion": conclusion})
            print(f"stand-in runner {me['name']} completed job {job['id']} ({conclusion})", flush=True)
            return 0
        time.sleep(0.2)
    print(f"stand-in runner {me['name']}: no job came", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
