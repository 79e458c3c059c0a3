"""An emulated OpenStack cloud for tests and for trying `inv vm.*` by hand (see emulator.py)."""

from .emulator import (
    APP_CRED_ID,
    APP_CRED_SECRET,
    PASSWORD,
    PROJECT_ID,
    Cloud,
    Emulator,
    Request,
)

__all__ = ["APP_CRED_ID", "APP_CRED_SECRET", "PASSWORD", "PROJECT_ID", "Cloud", "Emulator", "Request"]
