"""Fast tests: no service needed (emulated clouds and APIs on loopback, temporary folders)."""
