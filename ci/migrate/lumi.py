"""`inv migrate.lumi`: a LUMI containers CI checkout, written as our container definitions.

The LUMI layout (RecipesDocker/ in their repository):

    <app>/build-<variant>.docker   the body of one image
    <app>/build-<variant>.sh       `cat` of common/ fragments before and after $DOCKERFILE into
                                   $DOCKERFILE_TMP, then `$DOCKERBUILD -f $DOCKERFILE_TMP
                                   --build-arg NAME=$VAR ... -t $TAG .`, run in <app>/ by their Makefile
    <app>/build-<variant>.test     run on the compute node with the image file as $1 and the
                                   launcher in $SCMD (their test.sbatch, written by
                                   lumi-containers-transfer.sh, sets it)
    common/Dockerfile.*            fragments shared by every recipe
    helper-files/                  the image `h` that recipes bind with `--mount=...,from=h`
    ../Recipes/*.def               Singularity definitions

becomes, under the output folder (a definitions root):

    common/                        their fragments, once
    <arch>/<app>/container.yaml    one variant per build-*.sh (per `$DOCKERBUILD` line), with the
                                   body as `dockerfile:`, the exact `cat` order as `compose:`, the
                                   build args with the script's values, and the .test as a
                                   `run: host` test with their test.sbatch's resources
    <arch>/<app>/...               the app folder's other files: the shared build context
    <arch>/<app>/tests/*.test      the test scripts, unchanged
    <arch>/h/                      helper-files/, the site-environment image
    <arch>/<name>.def              Recipes/*.def, unchanged, lower-cased names

Build scripts are read, never run (`ci.migrate.shell`): only comments, `set` options, variable
assignments, one `cat ... > $DOCKERFILE_TMP`, `$DOCKERBUILD` lines and the `echo "$TAG" > $RES`
bookkeeping are translated; any other line is reported with its number and text, and the whole
migration exits 2 unless `--partial` (then the other recipes are written and the refused ones
listed). The checkout is only read, symlinks must stay inside it, and every file is checked
before anything is written; the tree is built beside the output folder and moved into place in
one rename, so a failed run leaves nothing half-written, and two runs write the same bytes.

This module runs a migration; the work is split by concern: `findings` (the report), `checkout`
(their layout's names and read-only access), `build_script` (reading a build-*.sh), `sbatch`
(reading their test.sbatch), `translate` (the checkout as our tree) and `writer` (writing it).
"""

from __future__ import annotations

import os
from pathlib import Path

from ci.migrate.build_script import read_build_script
from ci.migrate.checkout import (
    BUILD_SCRIPT,
    COMMON,
    DEF_RECIPES,
    HELPER,
    RECIPES,
    TRANSFER_SCRIPT,
    Checkout,
    derive_name,
)
from ci.migrate.findings import Finding, MigrationError, Report
from ci.migrate.sbatch import TestDefaults, read_test_defaults
from ci.migrate.shell import ShellSyntaxError
from ci.migrate.translate import (
    check_names,
    transfer_defaults,
    translate_app,
    translate_common,
    translate_def_recipes,
    translate_helper,
)
from ci.migrate.writer import TreeFile, write_tree

MARKER = ".lumi-migration"
MARKER_TEXT = "This definitions tree was written by `inv migrate.lumi`; running it again replaces it.\n"


def migrate(checkout: Path, out: Path, *, partial: bool = False, arch: str = "amd64") -> Report:
    """Read the checkout, write the definitions tree to `out` (replacing an earlier migration's tree).

    Without `partial`, any refusal means nothing is written and the report is not ok.
    """
    checkout = Path(os.path.abspath(checkout))
    out = Path(os.path.abspath(out))
    _check_places(checkout, out)
    if arch not in ("amd64", "arm64"):
        raise MigrationError(f"--arch {arch!r} is not an architecture folder; use amd64 or arm64")
    report = Report(checkout=checkout, out=out, partial=partial)
    tree: dict[str, TreeFile] = {MARKER: TreeFile(MARKER_TEXT.encode(), None, False)}
    reader = Checkout(checkout, report)
    recipes_dir = checkout / RECIPES
    defaults = TestDefaults()
    if recipes_dir.is_dir():
        if not reader.inside(recipes_dir):
            raise MigrationError(f"{recipes_dir} is a symlink out of the checkout; nothing was read")
        defaults = transfer_defaults(reader, recipes_dir)
        translate_common(reader, recipes_dir, tree)
        translate_helper(reader, recipes_dir, arch, tree)
        for app_dir in reader.listing(recipes_dir):
            if app_dir.name in (COMMON, HELPER) or not app_dir.is_dir():
                continue
            scripts = [path for path in reader.listing(app_dir) if BUILD_SCRIPT.match(path.name)]
            if scripts:
                translate_app(reader, app_dir, scripts, arch, defaults, tree)
    translate_def_recipes(reader, checkout / DEF_RECIPES, arch, tree)
    if not report.recipes and not report.definitions:
        raise MigrationError(f"{checkout} has no {RECIPES}/<app>/build-*.sh recipes and no {DEF_RECIPES}/*.def; "
                             "pass the root of a LUMI-containers checkout")
    check_names(report, arch, tree)
    for message, fix in defaults.notes:
        report.notes.append(Finding(f"{RECIPES}/{TRANSFER_SCRIPT}", message, fix))
    if defaults.binds:
        report.notes.append(Finding(f"{RECIPES}/{TRANSFER_SCRIPT}",
                                    f"their SCMD binds {', '.join(defaults.binds)} into every test",
                                    "set ci.site.binds to these paths in your LUMI site profile"))
    if report.all_problems and not partial:
        return report
    def accept(staged: Path) -> str:
        if _loader_check(staged, report, arch, tree):
            return "write"
        return "restage" if partial or not report.all_problems else "abandon"

    report.written = write_tree(out, tree, accept)
    return report


def _loader_check(staged: Path, report: Report, arch: str, tree: dict[str, TreeFile]) -> bool:
    """Load the staged tree as `inv plan` will; what our loader refuses is not handed over as if it were fine.

    A migrated app the loader refuses is a refused recipe (the loader's reason, mapped back to the
    checkout's file); a `.def` it refuses (e.g. a bootstrap our .def kind cannot build) is left out
    with a note, since copying it was faithful and only building it is not possible here. Returns
    whether the staged tree can be handed over as it is (else it is written again without them).
    """
    from ci.definitions import load_catalog  # the loader is heavier than the migrator; only when writing

    catalog = load_catalog(staged, (arch,))
    changed = False
    for key, problems in sorted(catalog.problems.items()):
        name = key.split("/", 1)[1] if "/" in key else key
        recipes = [recipe for recipe in report.recipes if recipe.app == name and not recipe.problems]
        sources = [item for item in report.definitions if item["name"] == name]
        for problem in problems:
            where = _staged_name(problem.path, staged)
            field_text = f" ({problem.field})" if problem.field else ""
            message = f"the migrated {where}{field_text} is refused by our definitions loader: {problem.message}"
            if recipes:
                for recipe in recipes:
                    recipe.problems.append(Finding(recipe.file, message, problem.fix))
            elif sources:
                report.notes.append(Finding(sources[0]["source"], f"is not written: {message}", problem.fix))
            else:
                report.problems.append(Finding(where, message, problem.fix))
        for item in sources:
            report.definitions.remove(item)
        for rel in [rel for rel in tree if rel.startswith(f"{arch}/{name}/") or rel == f"{arch}/{name}.def"]:
            del tree[rel]
            changed = True
    return not changed


def _staged_name(path: Path, staged: Path) -> str:
    try:
        return path.resolve().relative_to(staged.resolve()).as_posix()
    except (ValueError, OSError):
        return path.name


def _check_places(checkout: Path, out: Path) -> None:
    if not checkout.is_dir():
        raise MigrationError(f"{checkout} is not a folder; pass the root of a LUMI-containers checkout")
    real_checkout = Path(os.path.realpath(checkout))
    real_out = Path(os.path.realpath(out))
    if real_out == real_checkout or real_checkout in real_out.parents:
        raise MigrationError(f"--out {out} is inside the checkout, which is only read; choose a folder outside it")
    if real_out in real_checkout.parents:
        raise MigrationError(f"--out {out} contains the checkout; choose a folder beside it")
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise MigrationError(f"--out {out} exists and is not a folder; choose another --out")
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise MigrationError(f"--out {out} exists and holds files that an earlier `inv migrate.lumi` did not "
                                 "write; choose another --out or empty it")


__all__ = ["MigrationError", "Report", "ShellSyntaxError", "derive_name", "migrate", "read_build_script",
           "read_test_defaults"]
