"""`inv render NAME`: the exact recipe an image is built from, for any kind."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ci.definitions.kinds import KINDS
from ci.definitions.model import Catalog, ImageSpec, definition_key
from ci.errors import DefinitionError, Problem


@dataclass(frozen=True)
class Rendered:
    spec: ImageSpec
    recipe: str
    file_name: str  # e.g. "Dockerfile"

    def write(self, out: Path) -> Path:
        """Write the recipe to `out/<image name>/<file name>` (folders made as needed); return the path."""
        target = out / self.spec.name / self.file_name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.recipe, encoding="utf-8")
        return target


def render(catalog: Catalog, name: str) -> Rendered:
    """The recipe of the image named `name` (or `<arch>/<name>`); its definition's problems if it has any."""
    matches = [spec for key, spec in catalog.images.items() if name in (spec.name, key)]
    if len(matches) > 1:
        raise DefinitionError([Problem(catalog.root, "NAME", f"'{name}' names an image in several architectures",
                                       "write it as <arch>/<name>, e.g. " + matches[0].key)])
    if not matches:
        bad = [key for key in catalog.problems if name in (key, key.split("/", 1)[-1])]
        if bad:
            catalog.raise_for(bad)
        known = ", ".join(sorted(spec.name for spec in catalog.images.values())) or "none"
        raise DefinitionError([Problem(catalog.root, "NAME", f"'{name}' is no image of the definitions",
                                       f"use one of: {known}")])
    spec = matches[0]
    catalog.raise_for([definition_key(spec)])
    kind = KINDS[spec.kind]
    return Rendered(spec=spec, recipe=spec.recipe, file_name=kind.recipe_file or "recipe")
