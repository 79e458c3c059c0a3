"""eFlows4HPC's request bodies as its clients send them, made fit for the service's strict models.

eFlows4HPC's service reads `force` and `push` with `value.lower() == 'true'` when they are strings
(its own test_request.json sends "true" and "false"), accepts `push`, `path` and any platform,
and names the base image `BASE`/`BASE`. Here the four spellings true/false/True/False become JSON
booleans (anything else is refused, naming the field, instead of silently meaning false), and a
platform this service cannot build is refused with a sentence that says so. Everything else is left
to the strict models (models.WorkflowRequest): a version sent as a number is refused (quote it),
as `2.10` would otherwise be the version "2.1".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ci.errors import DefinitionError, Problem
from ci.service.models import ARCH_OF_PLATFORM

BODY = Path("request body")
TRUE = ("true", "True")
FALSE = ("false", "False")
BOOLEANS = ("force", "push")
# Platforms eFlows4HPC's examples and Docker know, which this service's builders do not have.
KNOWN_PLATFORMS = ("linux/ppc64le", "linux/s390x", "linux/riscv64", "linux/arm/v7", "linux/arm/v6", "linux/386",
                   "linux/mips64le")


def is_workflow(data: dict[str, Any]) -> bool:
    return "machine" in data or "workflow" in data


def coerce(data: dict[str, Any]) -> dict[str, Any]:
    """A copy of an eFlows4HPC body with its string booleans made plain; platforms this service does not
    build are a DefinitionError naming machine.platform."""
    body = dict(data)
    for key in BOOLEANS:
        value = body.get(key)
        if isinstance(value, str) and value in TRUE + FALSE:
            body[key] = value in TRUE
    machine = body.get("machine")
    if isinstance(machine, dict):
        platform = machine.get("platform")
        if isinstance(platform, str) and platform in KNOWN_PLATFORMS:
            supported = ", ".join(sorted(ARCH_OF_PLATFORM))
            raise DefinitionError([Problem(BODY, "machine.platform",
                                           f"{platform} is not supported on this service (it builds {supported}; "
                                           "there is no base image or emulated builder for it here)",
                                           f"ask for one of {supported}, or use a service with a {platform} builder")])
    return body
