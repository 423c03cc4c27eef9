"""What the notebook shows: a frame as a picture, the video watched as it is made, a player that keeps the
notebook small, and a download.

`show_video` puts a video into the notebook only up to `INLINE_LIMIT` bytes, once; a larger one plays from
disk. In Jupyter the notebook server hands the browser files under the kernel's working folder. Colab has no
such route: there a small file server in the kernel (`FileServer`, loopback only) gives the video to the
browser through the address Colab proxies to its port, answering the byte ranges a player asks for to seek
(Python's own `http.server` answers none).
"""
from __future__ import annotations

import base64
import html
import http.server
import mimetypes
import os
import re
import secrets
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.errors import InputError
from .runtime import in_colab

if TYPE_CHECKING:
    import numpy as np
    from IPython.display import HTML

    from ...generation.stream import FrameStream

INLINE_LIMIT = 1_400_000  # bytes: a video up to this size is embedded (as base64, 4/3 of it: under 2 MB of HTML); a larger one plays from disk


def data_url(mime: str, data: bytes) -> str:
    """`data` inline, as a base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def picture(image: np.ndarray, caption: str, width: int = 480) -> HTML:
    """One RGB frame as a small JPEG with a line under it (IPython HTML: the same in Colab and Jupyter)."""
    from IPython.display import HTML

    from ...media.images import encode_jpeg

    return HTML(f'<img width="{min(width, image.shape[1])}" src="{data_url("image/jpeg", encode_jpeg(image))}"><br>'
                f'<small>{html.escape(caption)}</small>')


def watch(stream: FrameStream, out: str | Path, every: float = 0.25) -> Path:
    """Watch the video grow as it is made, and write it to `out`.

    `stream` is a `Pipeline.stream(...)`. Its frames are shown as they come, in one picture updated in
    place at most every `every` seconds (so the notebook keeps one small JPEG, not a copy per frame),
    with how much of the video is made; the frames and their sound go into `out`, an mp4 that appears
    whole when the last frame is made (see `FrameStream.record`). Returns `out`'s path.
    """
    import time

    from IPython.display import HTML, display

    shown = display(HTML("<small>making the first frame...</small>"), display_id=True)
    start = last = time.perf_counter()
    frame = None
    with stream.record(None, out=out) as recording:
        for frame in stream:
            recording.add(frame)
            now = time.perf_counter()
            if now - last >= every:
                total = f" of {stream.total / 25:.1f}" if stream.total else ""
                shown.update(picture(frame.image, f"{(frame.index + 1) / 25:.1f}{total} s made in {now - start:.0f} s"))
                last = now
        recording.finish()
    if frame is not None:
        seconds = time.perf_counter() - start
        shown.update(picture(frame.image, f"done: {frame.index + 1} frames ({(frame.index + 1) / 25:.1f} s) in {seconds:.0f} s"))
    return Path(out)


def show_video(path: str | Path, width: int = 480) -> HTML:
    """An HTML5 player for an mp4 (Colab and Jupyter) whose HTML stays under 2 MB, whatever the video's size.

    A video up to INLINE_LIMIT bytes is embedded, once. A larger one plays from disk: in Colab
    through Colab's own route (a port of this machine that Colab proxies to the browser), in
    Jupyter through the notebook server's files (relative to the working folder). In Jupyter a
    download link points at the file on disk; in Colab, `download()` saves it.
    """
    from IPython.display import HTML

    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot show it ({exc.strerror}); check the path") from None
    name = html.escape(path.name)
    colab = in_colab()
    local = None if colab else _notebook_url(path)
    if size <= INLINE_LIMIT:
        source = data_url("video/mp4", path.read_bytes())
    elif colab:
        source = _colab_url(path)
    elif local is not None:
        source = local
    else:
        return HTML(f"<p>{name} ({size / 1e6:.1f} MB) is too large to embed and lies outside this notebook's folder: "
                    f"{html.escape(str(path.resolve()))}</p>")
    link = f'<br><a download="{name}" href="{html.escape(local)}">Download {name}</a>' if local is not None else ""
    return HTML(f'<video width="{int(width)}" controls src="{html.escape(source)}"></video>{link}')


def download(path: str | Path) -> None:
    """In Colab the browser saves the file; elsewhere, where it is (the link under the player saves it too)."""
    path = Path(path)
    if in_colab():
        from google.colab import files

        files.download(str(path))
    else:
        print(f"The video is at {path.resolve()}; the link under the player downloads it.")


def _notebook_url(path: Path) -> str | None:
    """`path` as a URL relative to the notebook (its kernel's working folder), or None when it lies outside."""
    relative = os.path.relpath(path.resolve(), Path.cwd().resolve())
    if relative.startswith(".."):
        return None
    return urllib.parse.quote(Path(relative).as_posix())


def _colab_url(path: Path) -> str:
    """A URL where the browser gets `path` in Colab: the kernel's file server, reached through the address Colab
    proxies to its port (`google.colab.kernel.proxyPort`)."""
    from google.colab import output

    port, route = _SERVED.add(path)
    base = output.eval_js(f"google.colab.kernel.proxyPort({port}, {{'cache': false}})")
    return f"{str(base).rstrip('/')}/{route}"


class FileServer:
    """Files given to the browser over HTTP on 127.0.0.1, each under a random name, with byte ranges (so the
    browser's player can seek). The server starts, in a daemon thread, with the first file."""

    def __init__(self) -> None:
        self._http: _Http | None = None

    def add(self, path: Path) -> tuple[int, str]:
        """Serve `path`: (the server's port, the URL path that gets it)."""
        if self._http is None:
            self._http = _Http()
            threading.Thread(target=self._http.serve_forever, daemon=True).start()
        token = secrets.token_urlsafe(16)
        self._http.files[token] = path.resolve()
        return self._http.server_address[1], f"{token}/{urllib.parse.quote(path.name)}"


class _Http(http.server.ThreadingHTTPServer):
    """The server behind a `FileServer`: random name -> file."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.files: dict[str, Path] = {}


class _FileHandler(http.server.BaseHTTPRequestHandler):
    """GET of a served file, whole (200) or one byte range (206)."""

    server: _Http

    def do_GET(self) -> None:
        token = self.path.lstrip("/").split("/", 1)[0]
        path = self.server.files.get(token)
        try:
            size = path.stat().st_size if path is not None else None
        except OSError:
            size = None
        if size is None:
            self.send_error(404)
            return
        start, stop = 0, size
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and (wanted[1] or wanted[2]):
            if wanted[1]:  # bytes=first-[last]
                start = int(wanted[1])
                stop = min(size, int(wanted[2]) + 1) if wanted[2] else size
            else:  # bytes=-count: the last count bytes
                start = max(0, size - int(wanted[2]))
            if start >= stop:
                self.send_error(416)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", mimetypes.guess_type(path.name)[0] or "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        with open(path, "rb") as source:
            source.seek(start)
            left = stop - start
            while left > 0 and (block := source.read(min(left, 1 << 20))):
                self.wfile.write(block)
                left -= len(block)

    def log_message(self, *args) -> None:
        """Quiet: no line per request in the notebook's output."""


_SERVED = FileServer()  # the kernel's one file server for large videos in Colab
