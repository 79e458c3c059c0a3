"""python-on-whales, imported on first use: `whales.DockerException`, `whales.run`, ...

Importing python-on-whales costs about 0.4 s (it builds a hundred pydantic models) and a run with
nothing to build never needs it, so modules name its pieces through this one, e.g.
`except whales.DockerException:`. An `except` clause evaluates its class only when an exception
reaches it, so the import happens when something failed or a real Docker call is made.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from python_on_whales import DockerClient as DockerClient
    from python_on_whales.exceptions import DockerException as DockerException
    from python_on_whales.exceptions import NoSuchImage as NoSuchImage
    from python_on_whales.utils import run as run
    from python_on_whales.utils import stream_stdout_and_stderr as stream_stdout_and_stderr

_HOMES = {
    "DockerClient": "python_on_whales",
    "DockerException": "python_on_whales.exceptions",
    "NoSuchImage": "python_on_whales.exceptions",
    "run": "python_on_whales.utils",
    "stream_stdout_and_stderr": "python_on_whales.utils",
}


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value
