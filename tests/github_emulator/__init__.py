"""An emulated GitHub Actions API on loopback and a stand-in runner, for ci.runners (see emulator.py)."""

from .emulator import REPOSITORY, TOKEN, Emulator, GitHub, wait_for

__all__ = ["REPOSITORY", "TOKEN", "Emulator", "GitHub", "wait_for"]
