"""What the tests share, as one package (imported as `tests.support...`, never through pytest's rootdir).

    paths            PROJECT_DIR, EXAMPLES, INVOKE_YAML: where the project is
    config           project_config(): the `ci:` section of invoke.yaml, a fresh copy per call
    services         unmet / missing / require and require_<service>(): present, or skip (fail in CI)
    fixtures         docker_available, registry_available, slurm_available, loopback_ssh, ... (via conftest)
    definitions      write_tree, definition: small definition trees in tmp_path
    http_emulator    HTTPEmulator: the loopback server the cloud and GitHub emulators are built on
    site_helpers     isolated projects on the local site (Docker, registry, Slurm, Charliecloud)
    service_helpers  the image-creation service: an isolated service, replicas, PostgreSQL databases
    lumi_layout      a LUMI containers CI checkout of our own, for the migrator's tests
    workflow_model   the generated GitHub workflow, read and simulated

The emulators themselves stay where `python -m tests.cloud_emulator` / `tests.github_emulator` find them.
"""

from tests.support.config import project_config
from tests.support.paths import EXAMPLES, PROJECT_DIR
from tests.support.services import missing, require, unmet

__all__ = ["EXAMPLES", "PROJECT_DIR", "missing", "project_config", "require", "unmet"]
