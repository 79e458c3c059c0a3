"""The Invoke front end (docs/architecture.md, layer 5): one module per task collection, assembled by
tasks.py, and the edge helpers they share. Library modules are imported when a task runs.
"""
