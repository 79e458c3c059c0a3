"""Spack environments as container definitions: site template merge, recipe rendering, build cache, janitor.

A Spacktainers-style definition (`<arch>/<name>.yaml`, or `<arch>/<name>/spack.yaml`) is merged
into the site template (`ci.spack.template`), rendered into a `spack.yaml` and a multi-stage
Dockerfile from the Jinja2 templates in `templates/` (as `spack containerize` renders its
recipes), and built like any image. `singularity` reads and translates Apptainer `.def` files;
`buildcache` and `janitor` keep the binary cache the builder stage installs from and pushes to.
It sits with the definitions (docs/architecture.md): the kinds render their recipes with it.

Where this package sits among the others: docs/architecture.md.
"""
