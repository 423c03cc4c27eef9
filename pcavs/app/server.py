"""What one running server holds, for its page (page.py) and its HTTP API (api.py) alike: the queue, the video
jobs, the live recordings, the avatars, which client uploaded which file, and the limits.
"""
from __future__ import annotations

import collections
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

from ..core.errors import InputError
from ..core.options import Options
from .jobs import Backend, Queue, Video, Videos
from .limits import Limits
from .live import Sessions
from .video import check_inputs, make_video
from .workspace import Workspace


def _copy(file: tuple[str, str] | None, folder: Path, role: str) -> tuple[str, str] | None:
    """The request's own copy of an input, in its job's folder: (path, the user's file name)."""
    if file is None:
        return None
    path, shown = file
    target = folder / f"{role}{Path(shown).suffix.lower()[:6]}"
    try:
        shutil.copyfile(path, target)
    except OSError:
        raise InputError(f"{role}: {shown}: the upload is gone; send it again") from None
    return str(target), shown


class Uploads:
    """Which client uploaded which file (through the page's upload route): a request may name only its own."""

    KEEP = 10000

    def __init__(self):
        self._owners: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lock = threading.Lock()

    def add(self, path: str, client: str) -> None:
        with self._lock:
            self._owners[str(Path(path).resolve())] = client
            while len(self._owners) > self.KEEP:
                self._owners.popitem(last=False)

    def check(self, path: str, client: str, role: str, shown: str) -> None:
        """InputError unless `client` uploaded `path`."""
        with self._lock:
            owner = self._owners.get(str(Path(path).resolve()))
        if owner != client:
            raise InputError(f"{role}: {shown} is not a file this client uploaded; upload the file with the request")


class Avatars:
    """Live's photos: a photo chosen in the page gets a token (its avatar is prepared where Live runs: `Backend.live`)."""

    def __init__(self):
        self._photos: dict[str, str] = {}
        self._lock = threading.Lock()

    def token(self, photo: str) -> str:
        with self._lock:
            for token, known in self._photos.items():
                if known == photo:
                    return token
            token = secrets.token_urlsafe(12)
            self._photos[token] = photo
            return token

    def photo(self, token: str | None, default: str) -> Path:
        """The photo of `token`, else `default`."""
        with self._lock:
            return Path(self._photos.get(token or "", default))


class Server:
    """The state of one `pcavs serve`: see the module's docstring."""

    def __init__(self, backend: Backend, limits: Limits, queue_size: int, ice_servers: list[dict]):
        self.backend = backend
        self.limits = limits
        self.workspace = Workspace()
        self.queue = Queue(backend, queue_size, limits.per_client)
        self.videos = Videos(self.queue, limits, self.workspace.requests, backend.work or make_video)
        self.sessions = Sessions(self.queue, limits, ice_servers, backend.live)
        self.avatars = Avatars()
        self.uploads = Uploads()

    def submit(self, client: str, face: tuple[str, str] | None, audio: tuple[str, str] | None,
               pose: tuple[str, str] | None, values: dict[str, Any]) -> Video:
        """Check a video request (one-line InputError naming the user's file) and queue it."""
        self.videos.sweep(self.workspace.max_age)
        text = {name: "" if value is None else str(value) for name, value in values.items()}
        options = self.limits.options(Options.from_strings(text), self.backend.device_type)
        job = self.videos.new(client)
        try:
            face, audio, pose = (_copy(file, job.folder, role) for file, role in ((face, "face"), (audio, "audio"), (pose, "pose")))
            inputs = check_inputs(self.limits, job.folder, face, audio, pose)
        except BaseException:
            self.videos.delete(job.id)
            raise
        self.videos.start(job, inputs, options)
        return job

    def close(self) -> None:
        self.videos.close()
        self.backend.close()
        self.workspace.remove()
