"""This machine as a site (docs/architecture.md, layer 2): the local services, the images it makes for
itself and every stand-in. Stand-ins are chosen by configuration, never imported by production paths.
"""
