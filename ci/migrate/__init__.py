"""Migrators: read another CI's repository layout and write our container definitions from it.

`lumi` reads a checkout of the LUMI containers CI (RecipesDocker/ with build-*.sh recipes,
common/ fragments, helper-files/, Recipes/*.def) with the modules beside it, one per concern:
`findings` (the report), `checkout` (their layout, read-only), `build_script` (one build-*.sh),
`sbatch` (their test.sbatch's resources), `translate` (the checkout as our tree) and `writer`
(the tree written in one step); `shell` is the reader for the small part of shell their build
scripts use. A migrator never writes to the checkout it reads, and writes its
output tree in one step (nothing half-written), the same bytes on every run.

Where this package sits among the others: docs/architecture.md.
"""
