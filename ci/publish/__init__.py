"""Publishing tested images where their users pull from, with checksums, signatures and provenance.

One file per target kind behind `base.Publisher` (registered by `@kind`): `registry` (the OCI image,
copied blob by blob), `oras` (the HPC image file as an ORAS artifact Apptainer pulls), `object-store`
(the file in an S3-compatible store, LUMI's `data.json` catalog). Around them, the parts every kind
shares: `settings` (`ci.publish`), `catalog`, `signing` (gpg), `provenance`, `publishing` (which
images, in what order, the catalog last), `verify` and `prune`.

The pipeline's publish step (`ci/pipeline/steps/publish.py`) and `inv publish.*` reach it through
`publishing_for(settings)`; neither names a kind. Where this package sits: docs/architecture.md.
"""

from __future__ import annotations

from pathlib import Path

from ci.config.publish import PublishSettings, publish_settings
from ci.publish.publishing import Outcome, Publishing, TestedImage


def publishing_for(settings: PublishSettings, project_dir: Path, *,
                   targets: tuple[str, ...] = ()) -> Publishing | None:
    """The run's publishing (the typed `ci.publish`), or None when no target is configured."""
    if not settings.targets:
        return None
    return Publishing(settings, project_dir, targets=targets)


__all__ = ["Outcome", "PublishSettings", "Publishing", "TestedImage", "publish_settings", "publishing_for"]
