"""The GitHub Actions glue: the per-image job matrix, "did these paths change?", and step outputs.

The workflows (`.github/workflows/*.yml`) decide nothing: each step is one `inv` call, and what a
call needs from GitHub's side (writing `$GITHUB_OUTPUT`, comparing two commits) lives here. Nothing
else in `ci` knows about GitHub. The layers are drawn in docs/architecture.md.
"""
