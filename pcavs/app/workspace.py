"""The web app's own folder: uploads and Gradio's cache, the ffmpeg/ffprobe tools, one folder per request.

Every request works in a folder of its own (`request()`), so two jobs never share a path. A
finished request's folder (its mp4 is served from there) is deleted once it is `max_age`
seconds old, when the next request starts; `remove()` deletes the whole folder, and runs at exit.
"""
from __future__ import annotations

import atexit
import contextlib
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

RESULT_LIFETIME = 3600.0  # seconds a finished request's files stay downloadable


class Workspace:
    """A fresh temporary folder owned by one server: `root/requests/<id>` per request."""

    def __init__(self, max_age: float = RESULT_LIFETIME):
        self.root = Path(tempfile.mkdtemp(prefix="pcavs-serve-")).resolve()
        self.requests = self.root / "requests"
        self.requests.mkdir()
        self.max_age = max_age
        self._finished: dict[Path, float] = {}  # folder -> when its request ended
        self._lock = threading.Lock()
        atexit.register(self.remove)

    @contextlib.contextmanager
    def request(self) -> Iterator[Path]:
        """A new, empty folder for one request (old finished ones are deleted first)."""
        self.sweep()
        folder = self.requests / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(6)}"
        folder.mkdir(parents=True)
        try:
            yield folder
        finally:
            with self._lock:
                self._finished[folder] = time.monotonic()

    def sweep(self) -> None:
        """Delete the folders of requests that ended more than `max_age` seconds ago."""
        now = time.monotonic()
        with self._lock:
            old = [folder for folder, ended in self._finished.items() if now - ended > self.max_age]
            for folder in old:
                del self._finished[folder]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)

    def folders(self) -> list[Path]:
        """The request folders on disk now."""
        return sorted(p for p in self.requests.iterdir() if p.is_dir()) if self.requests.is_dir() else []

    def remove(self) -> None:
        """Delete everything the server wrote (safe to call twice)."""
        shutil.rmtree(self.root, ignore_errors=True)
        atexit.unregister(self.remove)
