"""Definition kinds: the registry. Adding a kind is one module in this folder plus one line in KINDS.

Discovery asks the kinds in the order of `KINDS` which one claims an entry of an architecture
folder; Docker comes last because it claims any folder with a Dockerfile or a container.yaml.
Kinds recognised but not built yet are `NotHandled` entries: their definitions are listed as
"not handled" and block nothing. The interface is `ci.definitions.kinds.base.DefinitionKind`.
"""

from __future__ import annotations

from pathlib import Path

from ci.definitions.kinds.base import DefinitionKind, LoadContext, NotHandled
from ci.definitions.kinds.docker import DockerKind
from ci.definitions.kinds.singularity import SingularityKind
from ci.definitions.kinds.spack import SpackKind

__all__ = ["KINDS", "DefinitionKind", "LoadContext", "NotHandled", "kind_for", "looked_for"]

_NOT_BUILT = "are recognised but not built by this release"

KINDS: dict[str, DefinitionKind] = {
    "spack": SpackKind(),
    "singularity": SingularityKind(),
    "docker": DockerKind(),  # last: it claims any folder with a Dockerfile or a container.yaml
}


def kind_for(entry: Path) -> DefinitionKind | None:
    """The first kind (in KINDS order) that claims `entry`."""
    for kind in KINDS.values():
        if kind.claims(entry):
            return kind
    return None


def looked_for() -> str:
    """What a definition folder may hold, for "no ... found": `Dockerfile, spack.yaml or <name>.def`."""
    names = [KINDS["docker"].looks_for, *(kind.looks_for for name, kind in KINDS.items() if name != "docker")]
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0]
