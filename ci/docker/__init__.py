"""Docker engines (docs/architecture.md, layer 2): builds and the image inventory, pushes to registries.
"""
