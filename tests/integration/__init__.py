"""Tests against the real local services (Docker, registry, Slurm, sshd, PostgreSQL, ...)."""
