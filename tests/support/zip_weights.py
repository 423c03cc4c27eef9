"""A stand-in model for the installer's tests: any readable zip "loads", anything else is refused."""
from __future__ import annotations

import zipfile
from pathlib import Path

from pcavs.core.errors import WeightsError


def load(path: Path, label: str) -> None:
    """The loader of the stand-in registry entry: WeightsError (naming `label`) unless `path` is a zip file."""
    if not zipfile.is_zipfile(path):
        raise WeightsError(f"{label}: not the expected file")
