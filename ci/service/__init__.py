"""The image-creation service: HPC images on request over a REST API (eFlows4HPC compatible).

Layout after the FastAPI full-stack template: `main.py` builds the app, `api/routes/` hold thin
handlers, `api/deps.py` the session and the current user, `models.py` the tables and the
request/response schemas, `crud.py` the database operations, `core/` settings and security.
Builds run through the pipeline (`ci.api`) behind one adapter, `builder.py`; `worker.py` is
the bounded pool that claims queued builds with a lease in the database.

Where this package sits among the others: docs/architecture.md.
"""
