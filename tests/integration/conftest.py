"""Fixtures the publish tests share: a throwaway signing key and the environment a run would have."""

from __future__ import annotations

from tests.support.publish_helpers import environ, key  # noqa: F401 - pytest finds fixtures by name here
