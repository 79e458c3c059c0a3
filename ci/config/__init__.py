"""Settings (docs/architecture.md, layer 0): every section of invoke.yaml's `ci:` as a typed pydantic
model on one base, one error formatter, the grammars and the loading; no heavy imports.
"""
