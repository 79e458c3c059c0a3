"""`inv migrate.*`: another CI's repository written as our container definitions.
"""

from __future__ import annotations

from pathlib import Path

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, stderr, stdout
from ci.cli.help import COMMON_HELP
from ci.errors import CIError


@task(positional=["checkout"], help={
    "checkout": "Root of a LUMI-containers checkout (the folder holding RecipesDocker/ and Recipes/); only read.",
    "out": "Folder to write the definitions tree to (a definitions root: common/, amd64/...); must be new, empty "
           "or an earlier migration's output, which is replaced in one step. Required.",
    "partial": "Write the recipes that translate even when others are refused (they are listed; exit 0).",
    "arch": "Architecture folder to write the definitions under (default: amd64).",
    "json": COMMON_HELP["json"],
})
@explained
def migrate_lumi(c, checkout, out=None, partial=False, arch="amd64", json=False):  # type: ignore[no-untyped-def]
    """Write our container definitions from a LUMI containers CI checkout.

    One variant per build-*.sh (per $DOCKERBUILD line) with its composition order, build args and
    its .test as a host-side test; common/ fragments once; helper-files/ as the image `h`;
    Recipes/*.def as .def definitions. A line of a build script it cannot translate faithfully is
    reported with its number and text, and nothing is written (exit 2) unless --partial.
    Running it twice writes the same tree.
    """

    from ci.migrate import lumi

    if out is None:
        raise CIError("say where the definitions go: --out DIR (a new or empty folder)")
    report = lumi.migrate(Path(checkout), Path(out), partial=partial, arch=arch)
    if json:
        emit_json(report.as_dict())
    else:
        for line in report.lines():
            stdout.print(line, highlight=False, markup=False)
        for problem in report.all_problems:
            stderr.print(f"problem: {problem}", highlight=False, markup=False)
        for note in report.notes:
            stderr.print(f"note: {note}", highlight=False, markup=False)
    if not report.ok:
        raise Exit(code=2)


ns = Collection("migrate")
ns.add_task(migrate_lumi, name="lumi")
