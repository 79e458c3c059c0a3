"""Migrators: read another CI's repository layout and write our container definitions from it.

`lumi` reads a checkout of the LUMI containers CI (RecipesDocker/ with build-*.sh recipes,
common/ fragments, helper-files/, Recipes/*.def); `shell` is the reader for the small part of
shell its build scripts use. A migrator never writes to the checkout it reads, and writes its
output tree in one step (nothing half-written), the same bytes on every run.

Where this package sits among the others: docs/architecture.md.
"""
