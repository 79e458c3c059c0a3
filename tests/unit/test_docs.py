"""The documentation holds to what the code and CI do.

The README's quick start is the pair of commands `.ci/run` runs (so "the suite passes with the README's
two commands" is what CI proves), every page under docs/ is in the site's navigation and on the
README's map, every settings key the models accept is on the configuration page (and every key that
page lists exists), and the site builds with `mkdocs build --strict` (broken links and anchors fail it).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
import types
import typing
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from ci.config.settings import CISection, HelperImageSettings, SiteSettings, VMConfig
from ci.resources import Resources
from tests.support.paths import PROJECT_DIR
from tests.support.services import unmet

DOCS = PROJECT_DIR / "docs"
README = PROJECT_DIR / "README.md"
MKDOCS_YML = PROJECT_DIR / "mkdocs.yml"
CONFIGURATION = DOCS / "configuration.md"

# The sections of `ci:` that CISection keeps as plain mappings, and the model each is checked with.
# (When a section becomes a typed field of CISection, the walk below reads the model from the field.)
UNTYPED_SECTIONS: dict[str, type[BaseModel]] = {
    "site": SiteSettings, "vm": VMConfig, "openstack_image": HelperImageSettings,
}
# Models documented as a whole elsewhere (a job's resources: docs/site.md, "Resources"), not key by key.
DOCUMENTED_AS_A_WHOLE: tuple[type[BaseModel], ...] = (Resources,)
# Keys the configuration page may name that no model field holds: the profiles are popped before checking.
NOT_FIELDS = {"ci.profiles"}


# -- helpers -----------------------------------------------------------------------------------------


def code_block(markdown: str, heading: str) -> list[str]:
    """The lines of the first fenced block under `heading` (a `## ` heading), without blank lines."""
    section = markdown.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"^```[a-z]*\n(.*?)^```", section, re.MULTILINE | re.DOTALL)
    assert match, f"no code block under '## {heading}'"
    return [line for line in match.group(1).splitlines() if line.strip()]


def script_commands(path: Path) -> list[str]:
    """The commands of a shell script: its lines without comments, `set`, `cd` and `export` lines."""
    commands = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split(" #", 1)[0].strip()
        if line and not line.startswith(("#", "set ", "cd ", "export ")):
            commands.append(line)
    return commands


def nav_pages(nav: Any) -> Iterator[str]:
    """Every page path of a MkDocs `nav` (nested lists of `{title: page or [more]}`, or bare paths)."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for entry in nav:
            yield from nav_pages(entry)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


def mkdocs_config() -> dict[str, Any]:
    config = yaml.safe_load(MKDOCS_YML.read_text(encoding="utf-8"))
    assert isinstance(config, dict)
    return config


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs (Python-Markdown's toc) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)
    return {slug(match.group(1).replace("`", "")) for match in re.finditer(r"^#{1,6} (.+)$", text, re.MULTILINE)}


def _unwrap(annotation: Any) -> list[Any]:
    """The types inside Optional/Union/Annotated."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [inner for arg in typing.get_args(annotation) for inner in _unwrap(arg)]
    return [annotation]


def _model_in(annotation: Any) -> tuple[str, type[BaseModel]] | None:
    """(path suffix, model) when a field holds a model: itself, a mapping of them, or a list of them."""
    for candidate in _unwrap(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return "", candidate
        origin, args = typing.get_origin(candidate), typing.get_args(candidate)
        if origin is dict and len(args) == 2:
            inner = _model_in(args[1])
            if inner is not None:
                return ".<*>" + inner[0], inner[1]
        if origin in (list, tuple) and args:
            inner = _model_in(args[0])
            if inner is not None:
                return "[]" + inner[0], inner[1]
    return None


def settings_keys(prefix: str, model: type[BaseModel]) -> Iterator[tuple[str, bool]]:
    """(key, is a leaf) for every field under `model`, written `ci.site.arch.<*>.partition`, `ci.x.y[].z`."""
    for name, field in model.model_fields.items():
        path = f"{prefix}.{name}"
        nested = _model_in(field.annotation)
        if prefix == "ci" and name in UNTYPED_SECTIONS and nested is None:
            nested = ("", UNTYPED_SECTIONS[name])
        if nested is None or issubclass(nested[1], DOCUMENTED_AS_A_WHOLE):
            yield path, True
            continue
        yield path, False
        yield from settings_keys(path + nested[0], nested[1])


def documented_keys() -> set[str]:
    """The first column of every table on the configuration page (`<arch>`, `<name>` ... as `<*>`)."""
    keys = set()
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        match = re.match(r"\| `(ci(?:\.[^`|]+)?)` \|", line)
        if match:
            keys.add(re.sub(r"<[a-z_-]+>", "<*>", match.group(1)))
    return keys


# -- the README's quick start ------------------------------------------------------------------------


def test_readme_quick_start_is_what_ci_runs() -> None:
    """Two commands: set up + build-all on the examples, and the test command `.ci/run` runs."""
    block = code_block(README.read_text(encoding="utf-8"), "Quick start")
    assert len(block) == 2, block
    setup, tests = block
    run = script_commands(PROJECT_DIR / ".ci" / "run")
    # .ci/run: the setup script, then the test command. The README runs exactly these.
    assert run[0] == "bash .ci/setup"
    assert setup == f"{run[0]} && .venv/bin/inv build-all"
    assert tests == run[1] == ".venv/bin/nox -s tests lint typecheck"
    # and .ci/setup is what puts inv and nox into .venv/: the project with its dev extras, then the services
    setup_commands = script_commands(PROJECT_DIR / ".ci" / "setup")
    assert "python3 -m venv .venv" in setup_commands
    assert ".venv/bin/pip install -q -e '.[dev]'" in setup_commands
    assert setup_commands[-1] == ".venv/bin/inv local.up"


@pytest.mark.parametrize("page", ["index.md", "frontends/tasks.md"])
def test_pages_that_repeat_the_quick_start_repeat_it_exactly(page: str) -> None:
    readme = code_block(README.read_text(encoding="utf-8"), "Quick start")
    heading = "Quick start" if page == "index.md" else "Local use"
    assert code_block((DOCS / page).read_text(encoding="utf-8"), heading) == readme


# -- pages, navigation and the README's map ----------------------------------------------------------


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_is_a_page() -> None:
    pages = {path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md")}
    listed = list(nav_pages(mkdocs_config()["nav"]))
    assert sorted(pages - set(listed)) == [], "pages left out of mkdocs.yml's nav"
    assert sorted(set(listed) - pages) == [], "nav entries without a page under docs/"
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


def test_the_readme_map_links_every_page_and_only_pages_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)", text)
    linked = {target.removeprefix("docs/") for target, _ in links if target.endswith(".md")}
    for target, anchor in links:
        path = PROJECT_DIR / target
        assert path.exists(), f"README links {target}, which does not exist"
        if anchor:
            assert anchor in anchors(path), f"README links {target}#{anchor}: no such heading"
    missing = sorted(set(nav_pages(mkdocs_config()["nav"])) - linked)
    assert missing == [], "pages the README's documentation map does not link"


def test_docs_site_output_is_git_ignored() -> None:
    """The built site never lands in a commit: a pattern of .gitignore covers mkdocs.yml's site_dir.
    (Read from .gitignore rather than asked of git: CI's checkout may have no .git folder or no git.)"""
    parts = Path(mkdocs_config()["site_dir"]).parts
    prefixes = ["/".join(parts[:length]) for length in range(1, len(parts) + 1)]
    lines = (PROJECT_DIR / ".gitignore").read_text(encoding="utf-8").splitlines()
    patterns = [line.strip().strip("/") for line in lines if line.strip() and not line.startswith(("#", "!"))]
    assert any(fnmatch.fnmatchcase(prefix, pattern) for prefix in prefixes for pattern in patterns), \
        f"{'/'.join(parts)}/ (mkdocs.yml site_dir) is not git-ignored"


# -- every settings key on the configuration page -----------------------------------------------------


def test_the_walk_knows_every_untyped_section() -> None:
    """A `dict[str, Any]` section of `ci:` the walk would skip must be mapped to the model that checks it."""
    for name, field in CISection.model_fields.items():
        if _model_in(field.annotation) is None and typing.get_origin(field.annotation) is dict:
            assert name in UNTYPED_SECTIONS, f"ci.{name} is an untyped section; add its model to UNTYPED_SECTIONS"


def test_every_settings_key_is_on_the_configuration_page() -> None:
    keys = dict(settings_keys("ci", CISection))
    leaves = {key for key, leaf in keys.items() if leaf}
    assert "ci.site.ssh.host" in leaves and "ci.runners.targets[].slurm.cpus" in leaves  # the walk goes deep
    assert sorted(leaves - documented_keys()) == [], "settings keys docs/configuration.md does not list"


def test_the_configuration_page_lists_no_key_that_does_not_exist() -> None:
    known = set(dict(settings_keys("ci", CISection))) | NOT_FIELDS
    assert sorted(documented_keys() - known) == [], "keys on docs/configuration.md that no settings model has"


# -- the site builds -----------------------------------------------------------------------------------


def test_the_site_builds_without_a_warning(tmp_path: Path) -> None:
    """`mkdocs build --strict` (what `nox -s docs` runs): a broken link or anchor, or a page left out of
    the navigation, is a warning, and strict mode fails on it."""
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        unmet("mkdocs is not installed (pip install -e '.[dev]' installs it)")
        return
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARNING" not in result.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").is_file()


# A project path as the docs and docstrings name one: `ci/pipeline/steps/publish.py`, `tests/support/paths.py`.
PROJECT_PATH = re.compile(r"(?<![\w/.])((?:ci|tests|benchmarks|docs|schemas)/[\w/.-]+\.(?:py|md|yaml|json))")


def test_every_project_file_the_docs_and_docstrings_name_exists() -> None:
    """A file moved (the layout issue moved most of ci/) leaves its old name in prose no import checks."""
    texts = [*DOCS.rglob("*.md"), PROJECT_DIR / "README.md", *(PROJECT_DIR / "ci").rglob("*.py"),
             *(PROJECT_DIR / "tests").rglob("*.py"), *(PROJECT_DIR / "benchmarks").rglob("*.py")]
    missing = sorted({f"{path.relative_to(PROJECT_DIR)} names {name}"
                      for path in texts for name in PROJECT_PATH.findall(path.read_text(encoding="utf-8"))
                      if not (PROJECT_DIR / name).exists() and path.name != "test_architecture.py"})
    assert missing == []
