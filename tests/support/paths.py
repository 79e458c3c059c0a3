"""Where the project is, for every test: one definition instead of one per file."""

from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]
TESTS_DIR = PROJECT_DIR / "tests"
EXAMPLES = PROJECT_DIR / "container_definitions"  # the bundled definitions
INVOKE_YAML = PROJECT_DIR / "invoke.yaml"
