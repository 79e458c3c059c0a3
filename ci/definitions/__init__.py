"""Container definitions: the model, the schema of container.yaml, discovery, the FROM graph, the kinds.

- `model`: ImageSpec, TestSpec, Catalog and the name rules (names reach tags, files and job names);
- `schema`: the pydantic models of container.yaml (and its JSON Schema in schemas/);
- `files`: every file of a definition is read through here (links fenced, no blocking, UTF-8);
- `kinds`: one module per way of writing a definition, and the `KINDS` registry;
- `discovery`: `load_catalog`, which never stops at the first problem;
- `graph`: FROM edges, cycles, ancestors; `render`: the exact recipe of one image.

See docs/architecture.md for where this sits in the pipeline.
"""

from __future__ import annotations

from ci.definitions.discovery import load_catalog
from ci.definitions.graph import ancestors, find_cycles, resolve_parents
from ci.definitions.model import (
    CONTAINER_YAML,
    KNOWN_ARCHES,
    NAME_PATTERN,
    TESTS_FOLDER,
    Catalog,
    Expectation,
    FileCopy,
    ImageSpec,
    MetricCheck,
    TestSpec,
    UnsupportedDefinition,
    definition_key,
)
from ci.definitions.render import Rendered, render
from ci.resources import Resources, SlurmResources, is_valid_slurm_time

__all__ = [
    "CONTAINER_YAML", "KNOWN_ARCHES", "NAME_PATTERN", "TESTS_FOLDER", "Catalog", "Expectation", "FileCopy",
    "ImageSpec", "MetricCheck", "Rendered", "Resources", "SlurmResources", "TestSpec", "UnsupportedDefinition",
    "ancestors", "definition_key", "find_cycles", "is_valid_slurm_time", "load_catalog", "render",
    "resolve_parents",
]
