"""Publishing tested images where their users pull from, with checksums, signatures and provenance.

One file per target kind behind `base.Publisher` (registered by `@kind`): `registry` (the OCI image,
copied blob by blob), `oras` (the HPC image file as an ORAS artifact Apptainer pulls), `object-store`
(the file in an S3-compatible store, LUMI's `data.json` catalog). Around them, the parts every kind
shares: `settings` (`ci.publish`), `catalog`, `signing` (gpg), `provenance`, `publishing` (which
images, in what order, the catalog last), `verify` and `prune`.

The pipeline's publish step (`ci/steps/publish.py`) and `inv publish.*` reach it through
`publishing_for(settings)`; neither names a kind. Where this package sits: docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ci.publish.publishing import Outcome, Publishing, TestedImage
from ci.publish.settings import PublishSettings, publish_settings


def publishing_for(raw: Any, project_dir: Path, *, targets: tuple[str, ...] = ()) -> Publishing | None:
    """The run's publishing (`ci.publish` as written), or None when no target is configured."""
    settings = publish_settings(raw)
    if not settings.targets:
        return None
    return Publishing(settings, project_dir, targets=targets)


__all__ = ["Outcome", "PublishSettings", "Publishing", "TestedImage", "publish_settings", "publishing_for"]
