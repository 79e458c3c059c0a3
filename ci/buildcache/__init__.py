"""Spack binary build caches (docs/architecture.md, layer 1): the stores, what a build leaves for later
(its `spack.lock`), and the janitor. Pure: it never asks the planner; the api hands it the locks.
"""
