"""The GitHub Actions glue: the generated workflow, "did these paths change?", step outputs, and
the one client of GitHub's REST API.

The workflows (`.github/workflows/*.yml`) decide nothing: each step is one `inv` call, and what a
call needs from GitHub's side (writing `$GITHUB_OUTPUT`, comparing two commits, asking the API)
lives here. `client.py` is the only module of `ci` that talks HTTP to GitHub; its answers are read
through `models.py`, and `actions.py` holds the endpoints the tasks and the runner allocator call.
Nothing else in `ci` knows about GitHub. The layers are drawn in docs/architecture.md.
"""
