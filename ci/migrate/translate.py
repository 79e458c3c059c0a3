"""Translating the checkout into the output tree: common/, helper-files/, each app, Recipes/*.def.

Each function reads one part of their layout through the `Checkout` and adds `TreeFile`s to the
tree (a dict from output path to file); what it cannot translate becomes a finding on the recipe it
belongs to (or on the report), so nothing is written for a refused recipe and the rest can still be
written with --partial.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

from ci.migrate.build_script import read_build_script
from ci.migrate.checkout import (
    BUILD_SCRIPT,
    COMMON,
    HELPER,
    HELPER_IMAGE,
    IMAGE_NAME,
    LEFTOVER,
    MAX_NAME,
    TEST_NAME,
    TRANSFER_SCRIPT,
    Checkout,
    derive_name,
    file_name_problem,
    is_executable,
)
from ci.migrate.findings import Finding, Recipe, Report, excerpt, line_text
from ci.migrate.sbatch import TestDefaults, read_test_defaults
from ci.migrate.writer import TreeFile, yaml_text


def transfer_defaults(reader: Checkout, recipes_dir: Path) -> TestDefaults:
    path = recipes_dir / TRANSFER_SCRIPT
    if not path.exists() and not path.is_symlink():
        defaults = TestDefaults()
        defaults.notes.append(("does not exist", "the tests get our default resources; set slurm: in container.yaml"))
        return defaults
    problems: list[Finding] = []
    text = reader.text(path, problems)
    if text is None:
        reader.report.notes.extend(problems)
        return TestDefaults()
    return read_test_defaults(text)


def translate_common(reader: Checkout, recipes_dir: Path, tree: dict[str, TreeFile]) -> None:
    folder = recipes_dir / COMMON
    if not folder.is_dir():
        return
    for rel, path in reader.walk(folder):
        problems: list[Finding] = []
        name_problem = file_name_problem(rel)
        if name_problem:
            reader.report.problems.append(Finding(reader.rel(path), name_problem, "rename it"))
            continue
        if reader.text(path, problems) is not None:
            tree[f"{COMMON}/{rel}"] = TreeFile(None, path, False)
        else:
            reader.report.problems.extend(problems)


def translate_helper(reader: Checkout, recipes_dir: Path, arch: str, tree: dict[str, TreeFile]) -> None:
    """helper-files/ becomes the image `h`, the site environment their recipes bind with from=h."""
    folder = recipes_dir / HELPER
    if not folder.is_dir():
        return
    rel_folder = reader.rel(folder)
    problems: list[Finding] = []
    files: dict[str, TreeFile] = {}
    for rel, path in reader.walk(folder):
        name_problem = file_name_problem(rel)
        if name_problem:
            problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        elif rel in ("container.yaml", "tests") or rel.startswith("tests/"):
            problems.append(Finding(reader.rel(path), "has a name our definitions reserve", "rename it"))
        elif reader.check(path, problems):
            files[rel] = TreeFile(None, path, is_executable(path))
    if "Dockerfile" not in files:
        problems.append(Finding(rel_folder, "has no Dockerfile", "add the helper image's Dockerfile"))
    if problems:
        reader.report.problems.extend(problems)
        return
    dockerfile = reader.text(folder / "Dockerfile", problems) or ""
    for source in _copy_sources(dockerfile):
        if source not in files:
            reader.report.notes.append(Finding(
                f"{rel_folder}/Dockerfile", f"copies {source}, which is not in the checkout (their pipeline makes it "
                "on the build machine, e.g. with a capture script over SSH)",
                f"create {arch}/{HELPER_IMAGE}/{source} in the migrated tree before building, or use the "
                "site-environment step"))
    for rel, copy in files.items():
        tree[f"{arch}/{HELPER_IMAGE}/{rel}"] = copy
    tree[f"{arch}/{HELPER_IMAGE}/container.yaml"] = TreeFile(yaml_text(
        f"helper-files/ of the LUMI containers CI: the site environment image `{HELPER_IMAGE}` their recipes bind "
        f"(RUN --mount=type=bind,from={HELPER_IMAGE},...)", {"tests": []}), None, False)
    reader.report.definitions.append({"source": rel_folder, "name": HELPER_IMAGE, "kind": "site-environment image"})


def _copy_sources(dockerfile: str) -> list[str]:
    """The plain file names a Dockerfile COPYs or ADDs from its context (continuations joined)."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    sources: list[str] = []
    for line in joined.splitlines():
        words = line.split()
        if len(words) < 3 or words[0].upper() not in ("COPY", "ADD"):
            continue
        args = [word for word in words[1:] if not word.startswith("--")]
        if any(word.startswith("--from") for word in words[1:]):
            continue
        sources.extend(word for word in args[:-1] if not any(ch in word for ch in "*?[$"))
    return sources


def translate_app(reader: Checkout, app_dir: Path, scripts: list[Path], arch: str, defaults: TestDefaults,
         tree: dict[str, TreeFile]) -> None:
    """One app folder: one definition with a variant per $DOCKERBUILD line of each build-*.sh."""
    app = derive_name(app_dir.name)
    recipes = [Recipe(file=reader.rel(script), app=app) for script in scripts]
    reader.report.recipes.extend(recipes)
    if not reader.inside(app_dir):
        for recipe in recipes:
            recipe.problems.append(Finding(reader.rel(app_dir), "is a symlink to a folder outside the checkout",
                                           "replace it with the folder itself"))
        return
    if not IMAGE_NAME.match(app) or len(app) > MAX_NAME:
        for recipe in recipes:
            recipe.problems.append(Finding(reader.rel(app_dir), f"gives no usable image name ({excerpt(app)})",
                                           "rename the folder to letters, digits, '.', '_' or '-'"))
        return
    folder = f"{arch}/{app}"
    context: dict[str, TreeFile] = {}
    context_problems: list[Finding] = []
    test_names = {script.name[: -len(".sh")] + ".test" for script in scripts}
    for rel, path in reader.walk(app_dir):
        if BUILD_SCRIPT.match(rel) or rel in test_names:
            continue
        if LEFTOVER.match(PurePosixPath(rel).name):
            reader.report.notes.append(Finding(reader.rel(path), "is left over from a build of their pipeline "
                                               "(*.log, *.done, .tmp-*) and is not copied", ""))
            continue
        name_problem = file_name_problem(rel)
        if name_problem:
            context_problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        elif rel in ("container.yaml", "tests") or rel.startswith("tests/"):
            context_problems.append(Finding(reader.rel(path), "has a name our definitions reserve "
                                            "(container.yaml, tests/)", "rename it"))
        elif reader.check(path, context_problems):
            context[rel] = TreeFile(None, path, is_executable(path))
    variants: list[dict[str, Any]] = []
    tests: dict[str, TreeFile] = {}
    for script, recipe in zip(scripts, recipes, strict=True):
        recipe.problems.extend(context_problems)
        made = _variant(reader, app_dir, script, recipe, folder, defaults, tests)
        if not recipe.problems:
            variants.extend(made)
    suffixes = [variant["suffix"] for variant in variants]
    for recipe in recipes:
        for image in recipe.images:
            suffix = image[len(app) + 1:]
            if suffixes.count(suffix) > 1:
                recipe.problems.append(Finding(recipe.file, f"gives the image name {image}, as another recipe of "
                                               f"{reader.rel(app_dir)} does", "rename one of the recipes"))
    variants = [variant for variant in variants if suffixes.count(variant["suffix"]) == 1]
    if not variants:
        return
    for rel, copy in context.items():
        tree[f"{folder}/{rel}"] = copy
    for rel, copy in tests.items():
        tree[f"{folder}/tests/{rel}"] = copy
    tree[f"{folder}/container.yaml"] = TreeFile(yaml_text(
        f"{reader.rel(app_dir)}/ of the LUMI containers CI: one variant per $DOCKERBUILD line of its build-*.sh",
        {"tests": [], "variants": variants}), None, False)


def _variant(reader: Checkout, app_dir: Path, script: Path, recipe: Recipe, folder: str, defaults: TestDefaults,
             tests: dict[str, TreeFile]) -> list[dict[str, Any]]:
    app = recipe.app
    problems = recipe.problems
    name_problem = file_name_problem(script.name)
    if name_problem:
        problems.append(Finding(recipe.file, name_problem, "rename it"))
        return []
    text = reader.text(script, problems, script=True)
    if text is None:
        return []
    lines = text.split("\n")
    parsed = read_build_script(text)
    for line, message, fix in parsed.problems:
        problems.append(Finding(recipe.file, message, fix, line=line, text=line_text(lines, line)))
    match = BUILD_SCRIPT.match(script.name)
    assert match is not None
    variant_name = match.group("variant")
    body_name = f"build-{variant_name}.docker"
    compose: list[str] = []
    for entry in parsed.compose:
        if entry is None:
            compose.append("$DOCKERFILE")
            reader.text(app_dir / body_name, problems)
            continue
        target = _fragment(reader, app_dir, entry, recipe, folder, parsed.compose_line, lines)
        if target is not None:
            compose.append(target)
    test_script = _test_script(reader, app_dir, f"build-{variant_name}.test", recipe, tests)
    if problems:
        return []
    out: list[dict[str, Any]] = []
    recorded = set(parsed.recorded)
    for build in parsed.builds:
        suffix = derive_name(variant_name + build.tag_suffix)
        image = f"{app}-{suffix}"
        if not IMAGE_NAME.match(suffix) or len(image) > MAX_NAME:
            problems.append(Finding(recipe.file, f"gives no usable image name ({excerpt(image)})",
                                    "rename the recipe to letters, digits, '.', '_' or '-'", line=build.line))
            return []
        variant: dict[str, Any] = {"suffix": suffix, "dockerfile": body_name, "compose": compose}
        if build.build_args:
            variant["build_args"] = build.build_args
        variant_tests: list[dict[str, Any]] = []
        if test_script is not None and build.tag_suffix in recorded:
            test: dict[str, Any] = {"name": TEST_NAME, "script": f"tests/{test_script}", "run": "host"}
            if defaults.slurm:
                test["slurm"] = dict(defaults.slurm)
            variant_tests.append(test)
            recipe.tests.append(f"{image}/{TEST_NAME}")
        variant["tests"] = variant_tests
        recipe.images.append(image)
        out.append(variant)
    if test_script is not None and not parsed.recorded_seen:
        reader.report.notes.append(Finding(recipe.file, "records no tag in $RES, so their pipeline tests none of "
                                           "its images; the migrated images have no tests",
                                           "add `echo \"$TAG\" > $RES` to the script to test them"))
    return out


def _fragment(reader: Checkout, app_dir: Path, entry: str, recipe: Recipe, folder: str, line: int,
              lines: list[str]) -> str | None:
    """A `cat` argument as a compose entry (relative to the definitions root): common/X, or a file of the app."""
    problems = recipe.problems
    parts = PurePosixPath(os.path.normpath(entry)).parts
    if PurePosixPath(entry).is_absolute() or not parts:
        target = None
    elif parts[:2] == ("..", COMMON) and len(parts) > 2 and ".." not in parts[2:]:
        target = "/".join((COMMON, *parts[2:]))
    elif ".." not in parts:
        target = "/".join((folder, *parts))  # the app's own file, copied with its build context
    else:
        target = None
    if target is None:
        problems.append(Finding(recipe.file, f"composes {excerpt(entry)}, outside ../common/ and the recipe's folder",
                                "move the fragment into common/", line=line, text=line_text(lines, line)))
        return None
    if reader.text(app_dir / entry, problems) is None:
        return None
    return target


def _test_script(reader: Checkout, app_dir: Path, name: str, recipe: Recipe, tests: dict[str, TreeFile]) -> str | None:
    """The variant's .test as a file under tests/: a symlink to another .test of the folder stays one file."""
    path = app_dir / name
    if not path.exists() and not path.is_symlink():
        reader.report.notes.append(Finding(recipe.file, f"has no {name}; its images get no test",
                                           f"write {name} to test them"))
        return None
    if not reader.check(path, recipe.problems):
        return None
    real = Path(os.path.realpath(path))
    target = real.name if real.parent == Path(os.path.realpath(app_dir)) else name
    name_problem = file_name_problem(target)
    if name_problem:
        recipe.problems.append(Finding(reader.rel(path), name_problem, "rename it"))
        return None
    tests[target] = TreeFile(None, real, True)
    return target


def translate_def_recipes(reader: Checkout, folder: Path, arch: str, tree: dict[str, TreeFile]) -> None:
    """Recipes/*.def: Singularity definitions, copied unchanged under a lower-case name."""
    if not folder.is_dir():
        return
    if not reader.inside(folder):
        reader.report.problems.append(Finding(reader.rel(folder), "is a symlink to a folder outside the checkout",
                                              "replace it with the folder itself"))
        return
    for path in reader.listing(folder):
        if path.suffix != ".def":
            continue
        problems: list[Finding] = []
        name = derive_name(path.name[: -len(".def")])
        if not IMAGE_NAME.match(name) or len(name) > MAX_NAME:
            problems.append(Finding(reader.rel(path), f"gives no usable image name ({excerpt(name)})", "rename it"))
        elif reader.text(path, problems) is not None:
            tree[f"{arch}/{name}.def"] = TreeFile(None, path, False)
            reader.report.definitions.append({"source": reader.rel(path), "name": name, "kind": "singularity .def"})
        reader.report.problems.extend(problems)


def check_names(report: Report, arch: str, tree: dict[str, TreeFile]) -> None:
    """Two sources that would become the same definition: refuse both, never let one overwrite the other."""
    owners: dict[str, list[str]] = {}
    for recipe in report.recipes:
        if not recipe.problems:
            owners.setdefault(recipe.app, []).append(recipe.file.rsplit("/", 1)[0])
    for item in report.definitions:
        owners.setdefault(item["name"], []).append(item["source"])
    for name, sources in owners.items():
        distinct = sorted(set(sources))
        if len(distinct) < 2:
            continue
        for key in list(tree):
            if key.startswith(f"{arch}/{name}/") or key == f"{arch}/{name}.def":
                del tree[key]
        report.definitions = [item for item in report.definitions if item["name"] != name]
        for recipe in report.recipes:
            if recipe.app == name and not recipe.problems:
                recipe.problems.append(Finding(recipe.file, f"becomes the definition {name}, as "
                                               f"{' and '.join(distinct)} do", "rename one of them"))
        if not any(recipe.app == name for recipe in report.recipes):
            report.problems.append(Finding(distinct[0], f"becomes the definition {name}, as {distinct[1]} does",
                                           "rename one of them"))
