"""Fixtures of the end-to-end tests: `inv build-all` as a person runs it, in a fresh site and state dir.

The site helpers of the integration tests (tests/support/site_helpers.py) are shared: the
same isolated project, with the bundled definitions and the default image tags, so the Docker
images and registry tags are the developer's cache (reused and kept), while the site root, the
run records and the Slurm job names are the test's own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.site_helpers import EXAMPLES_DIR, SiteProject, isolated_project


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteProject]:
    """A project on the bundled examples (container_definitions/) with its own site and state dir."""
    yield from isolated_project(tmp_path_factory.mktemp("e2e"), definitions=EXAMPLES_DIR, shared_images=True)
