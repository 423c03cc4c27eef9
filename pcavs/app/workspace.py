"""The server's own folder: one folder per video job (`requests/<job id>`), apart from the uploads (Gradio keeps
those in its own folder), deleted when the job is cancelled or fails, an hour after it ends, or with the server."""
from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

RESULT_LIFETIME = 3600.0  # seconds a finished job's mp4 stays downloadable


class Workspace:
    """A fresh temporary folder owned by one server."""

    def __init__(self, max_age: float = RESULT_LIFETIME):
        self.root = Path(tempfile.mkdtemp(prefix="pcavs-serve-")).resolve()
        self.requests = self.root / "requests"
        self.requests.mkdir()
        self.max_age = max_age
        atexit.register(self.remove)

    def folders(self) -> list[Path]:
        """The job folders on disk now."""
        return sorted(p for p in self.requests.iterdir() if p.is_dir()) if self.requests.is_dir() else []

    def remove(self) -> None:
        """Delete everything the server wrote (safe to call twice)."""
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.remove)
