"""SingularityCE: the same command line as Apptainer, with `SINGULARITY_` variables.

SingularityCE (Sylabs) and Apptainer share their origin and their build/exec flags; what differs
here is the command and the prefix of the environment variables (`SINGULARITY_NOHTTPS`,
`SINGULARITY_DOCKER_USERNAME`, `SINGULARITY_DOCKER_PASSWORD`, `SINGULARITY_TMPDIR`).
Not installable here either: tested for the commands it produces.
"""

from __future__ import annotations

from typing import ClassVar

from ci.engines.apptainer import ApptainerEngine


class SingularityEngine(ApptainerEngine):
    """SIF images built with SingularityCE (or a legacy Singularity 3.x)."""

    name: ClassVar[str] = "singularity"
    binaries: ClassVar[tuple[str, ...]] = ("singularity",)
    env_prefix: ClassVar[str] = "SINGULARITY"
    install_hint: ClassVar[str] = ("singularity is not on the site host's PATH: load its module, set "
                                   "ci.site.engine to one that is installed, or leave it on auto")
