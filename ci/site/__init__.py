"""The HPC site (docs/architecture.md, layer 2): its folders and promotion, the lock, the login address
and the programming environment captured as an image.
"""
