"""Where cnnlab keeps decoded images, so that each source is decoded once: one folder for every source."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(explicit: Path | None = None) -> Path:
    """`explicit` if given, else $CNNLAB_CACHE, else the XDG cache folder (`~/.cache/cnnlab`)."""
    if explicit is not None:
        return Path(explicit)
    if os.environ.get("CNNLAB_CACHE"):
        return Path(os.environ["CNNLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnnlab"
