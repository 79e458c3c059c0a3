"""`inv site.*`: the HPC site's single steps (convert, test), its lock, its login address, the programming
environment image and the re-validation of tested images.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.tasks import task

from ci.cli.common import explained, names, run_control, settings_from, stdout
from ci.cli.help import COMMON_HELP, EMPTY_HELP, SITE_HELP
from ci.cli.shared import capture_site_env, finish_retest, run_steps, site_settings_for


@task(iterable=["only"], help={**SITE_HELP, **EMPTY_HELP})
@explained
def site_convert(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
                 retry_failed=False, json=False, allow_empty=False):
    """Convert step: make the HPC image files (.sif / .sqfs) from the site's registry.

    Uses ci.site.engine (apptainer, singularity, charliecloud, docker, or auto) and the squashfs
    compressor of ci.site.compression; an image file already converted is not made again.
    """
    run_steps(c, ("convert",), definitions, profile, only, arch, site_root, run, force, retry_failed, json,
              allow_empty=allow_empty)


@task(iterable=["only"], help={**SITE_HELP, **EMPTY_HELP})
@explained
def site_test(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None, force=False,  # type: ignore[no-untyped-def]
              retry_failed=False, json=False, allow_empty=False):
    """Test step: run each image's tests as batch jobs (Slurm, or directly) and judge them.

    Job names are <prefix>-<run-id>-<image>-<test>-<hash8> (the hash keeps arch, image and test apart);
    logs land in the run's staging folder.
    """
    run_steps(c, ("test",), definitions, profile, only, arch, site_root, run, force, retry_failed, json,
              allow_empty=allow_empty)


@task(help={"site_root": SITE_HELP["site_root"], "profile": COMMON_HELP["profile"]})
@explained
def site_unlock(c, profile=None, site_root=None):  # type: ignore[no-untyped-def]
    """Remove the site lock after you checked that the run holding it is gone."""
    from ci import api
    settings = site_settings_for(c, None, profile, None, site_root)
    owner = api.open_site(settings).force_unlock()
    stdout.print(f"removed the lock of {owner.describe()}" if owner else "the site was not locked", highlight=False)


@task(help={"profile": COMMON_HELP["profile"],
            "output": "Name of the step output that gets the address (default: address)."})
@explained
def site_resolve(c, profile=None, output="address"):  # type: ignore[no-untyped-def]
    """Resolve the site's login host once; later jobs use that address (CI_SITE_ADDRESS) for the run.

    A round-robin name (lumi.csc.fi) would otherwise give each job another login node: another
    registry behind the tunnel, other host keys. A local site writes an empty address.
    """
    from ci.github import outputs
    from ci.site import address as site_address
    settings = settings_from(c, profile=profile)
    address = site_address.resolve(settings.site.ssh.host, settings.site.ssh.port) if settings.site.ssh else ""
    outputs.write_outputs({output: address})
    stdout.print(f"{output}: {address or '(the site is this machine)'}", highlight=False, markup=False)


@task(help={"profile": COMMON_HELP["profile"], "site_root": SITE_HELP["site_root"]})
@explained
def site_env_task(c, profile=None, site_root=None):  # type: ignore[no-untyped-def]
    """Tar ci.site_env.paths on the site host into the site-env image (definitions COPY --from it).

    Its content digest counts as a parent of every definition that uses the image, so a site update
    rebuilds them and an unchanged site nothing. Without ci.site_env.paths there is nothing to do.
    """
    capture_site_env(site_settings_for(c, None, profile, None, site_root))


@task(iterable=["only"], help={**{k: v for k, v in SITE_HELP.items() if k not in ("force", "retry_failed")},
                               "run": "Run id of this re-validation (default: a new one)."})
@explained
def site_retest(c, definitions=None, profile=None, only=None, arch=None, site_root=None, run=None,  # type: ignore[no-untyped-def]
                json=False):
    """Re-run the tests of images already in tested/: no build, no conversion, each test once.

    Each image's tested folder gets a line in its history.jsonl (verdict, metrics). A tested image
    that fails now is a REGRESSION: reported, exit 1, and the image stays in tested/ untouched.
    """
    from ci.api import retest as retest_module
    settings = site_settings_for(c, definitions, profile, arch, site_root)
    with run_control() as (listeners, cancel):
        result = retest_module.retest(settings, only=names(only), run_id=run, listeners=listeners, cancel=cancel)
    finish_retest(result, json)


ns = Collection("site")
ns.add_task(site_convert, name="convert")
ns.add_task(site_test, name="test")
ns.add_task(site_unlock, name="unlock")
ns.add_task(site_resolve, name="resolve")
ns.add_task(site_env_task, name="env")
ns.add_task(site_retest, name="retest")
