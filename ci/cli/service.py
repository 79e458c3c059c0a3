"""`inv service.*`: the image-creation service. `service.serve` runs one replica; `service.token` makes
an API token; `service.request` builds one request without a server (library mode); `service.client`
talks to a running server.
"""

from __future__ import annotations

from invoke.collection import Collection
from invoke.exceptions import Exit
from invoke.tasks import task

from ci.cli.common import emit_json, explained, settings_from, stderr, stdout
from ci.cli.help import COMMON_HELP


@task(help={"profile": COMMON_HELP["profile"], "host": "Address to listen on (default: ci.service.host = 127.0.0.1).",
            "port": "Port to listen on (default: ci.service.port = 8080).",
            "no_workers": "Serve the API only; builds are run by other replicas."})
@explained
def service_serve(c, profile=None, host=None, port=None, no_workers=False):  # type: ignore[no-untyped-def]
    """Run the image-creation service (one replica) with uvicorn; Ctrl-C re-queues running builds.

    SQLite in the state folder by default; several replicas share a PostgreSQL database
    (ci.service.database, or $CI_SERVICE_DATABASE_URL when it holds a password).
    """
    from ci.service import control as service_cli
    service_cli.serve(settings_from(c, profile=profile), host=host, port=int(port) if port else None,
                      workers=not no_workers)


@task(help={"profile": COMMON_HELP["profile"], "user": "The user the token is for (created when new).",
            "admin": "Give the user the admin role (sees every build)."})
@explained
def service_token(c, user, profile=None, admin=False):  # type: ignore[no-untyped-def]
    """Make an API token for USER and print it once (only its hash is stored)."""
    from ci.service import control as service_cli
    print(service_cli.token(settings_from(c, profile=profile), user, admin=admin))


@task(help={"profile": COMMON_HELP["profile"], "json": COMMON_HELP["json"],
            "request": "The request file: eFlows4HPC's JSON, or {\"definition\": NAME, \"arch\", \"force\"}.",
            "render": "Write what would be built (Dockerfile, spack.yaml, apt and pip lists) into this new folder; "
                      "build nothing."})
@explained
def service_request(c, request, profile=None, json=False, render=None):  # type: ignore[no-untyped-def]
    """Build one request without a server (library mode), in the service's database and image store.

    Joins a build with the same content if one is running or finished; exits 1 if the build fails.
    With --render DIR, only stages the eFlows4HPC step into DIR (docs/eflows4hpc.md).
    """
    from ci.service import control as service_cli
    result = service_cli.request(settings_from(c, profile=profile), request,
                                 say=lambda text: stderr.print(text, highlight=False, markup=False), render=render)
    if render:
        if json:
            emit_json(result)
        else:
            stdout.print(f"rendered {result['image']} into {result['folder']}: " + ", ".join(result["staged"][:12])
                         + (" ..." if len(result["staged"]) > 12 else ""), highlight=False, markup=False)
        return
    if json:
        emit_json(result)
    else:
        stdout.print(f"{result['status']}: {result['message']}" + (f"\n{result['path']}" if result["path"] else ""),
                     highlight=False, markup=False)
    if not result["ok"]:
        raise Exit(code=1)


@task(positional=["action"], help={
    "profile": COMMON_HELP["profile"], "action": "build, status, logs, cancel or download.",
    "id": "The build id (status, logs, cancel, download).",
    "request": "build: the request file (eFlows4HPC's JSON or ours).",
    "definition": "build: a definition name instead of a request file.",
    "arch": "build: the definition's architecture (default amd64).", "force": "build: rebuild even if built.",
    "follow": "logs: stream until the build ends.", "out": "download: the folder to write to (default: .).",
    "url": "The service (default: ci.service.url, else http://HOST:PORT of ci.service)."})
@explained
def service_client(c, action, id=None, request=None, definition=None, arch=None, force=False, follow=False,  # type: ignore[no-untyped-def]
                   out=".", url=None, profile=None):
    """Talk to a running service; the token comes from $CI_SERVICE_TOKEN (and $CI_SERVICE_USER for HTTP basic).

    Prints JSON for build, status and cancel; the log text for logs; the written file for download
    (checked against the build's sha256).
    """
    from ci.service import control as service_cli
    service_cli.client(settings_from(c, profile=profile), action, build_id=id, request=request,
                       definition=definition, arch=arch, force=force, follow=follow, out=out, url=url)


ns = Collection("service")
ns.add_task(service_serve, name="serve")
ns.add_task(service_token, name="token")
ns.add_task(service_request, name="request")
ns.add_task(service_client, name="client")
