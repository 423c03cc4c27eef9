"""Notebook helpers: the GPU check, the media a job uses (uploaded, recorded or the demo), option
dropdowns built from `pcavs.Options`, the video watched as it is made, a player that keeps the notebook small,
and a download.

Uploads: in Colab, `google.colab.files.upload()` (one picker per input; it copes with large files,
which Colab's FileUpload widget does not); in Jupyter, one `ipywidgets.FileUpload` per input
(ipywidgets 7 and 8). Every upload or recording is copied into one temporary folder (a new
upload for an input replaces that input's copy; the folder is removed when Python exits) and
read with the readers pcavs uses for any file (`read_image`, `load_speech`, the video decoder):
an empty or unreadable one raises InputError naming it. The demo media stand in only for an
input that the user leaves empty, and `MediaPicker.files()` prints which file each input uses.

The player (`show_video`) puts a video into the notebook only up to `INLINE_LIMIT` bytes, once;
a larger one plays from disk, so a saved notebook stays small whatever the video's length.

Recording (microphone, webcam) needs Colab: its `output.eval_js` runs the browser side and hands
what the browser recorded back to Python. Plain Jupyter has no such channel that works in both
Notebook and JupyterLab without installing a widget extension, so there "record" is refused with
a message saying so: record with any app and upload the file.
"""
from __future__ import annotations

import base64
import binascii
import html
import http.server
import mimetypes
import os
import re
import secrets
import shutil
import tempfile
import threading
import urllib.parse
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from ..core.errors import InputError, PcavsError
from ..core.options import Options

ROLES = ("face", "audio", "pose")  # the keyword arguments of `pcavs.generate` that take media
WHAT = {"face": "face photo", "audio": "voice recording", "pose": "pose video (or image)"}
DEMO = {"face": DEMO_FACE, "audio": DEMO_AUDIO, "pose": DEMO_POSE}
SOURCES = {"face": ("upload", "record", "demo"), "audio": ("upload", "record", "demo"), "pose": ("upload", "demo", "none")}
ACCEPT = {"face": "image/*", "audio": "audio/*,video/*", "pose": "video/*,image/*"}
DEVICE = {"face": "webcam", "audio": "microphone"}
RECORDED_NAME = {"face": "webcam", "audio": "recording"}
SHOWN_OPTIONS = ("mode", "noise", "pose_loop")  # the options with a fixed set of values worth a dropdown
SUFFIXES = {
    "audio/webm": ".webm", "audio/ogg": ".ogg", "audio/mp4": ".m4a", "audio/mpeg": ".mp3", "audio/wav": ".wav",
    "audio/x-wav": ".wav", "audio/wave": ".wav", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp",
    "video/webm": ".webm", "video/mp4": ".mp4",
}
INLINE_LIMIT = 1_400_000  # bytes: a video up to this size is embedded (as base64, 4/3 of it: under 2 MB of HTML); a larger one plays from disk
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*);base64,(?P<data>[A-Za-z0-9+/=]*)")

# Browser side of the recordings, run by Colab's eval_js: each shows its own buttons in the cell's
# output, waits for the user, and resolves to a data URL of what the browser recorded.
RECORD_VOICE_JS = """
(async () => {
  const fit = () => window.google?.colab?.output?.setIframeHeight?.(document.documentElement.scrollHeight, true);
  const area = document.createElement('div');
  const button = document.createElement('button');
  const status = document.createElement('span');
  button.textContent = 'Start recording';
  area.append(button, status);
  document.body.append(area);
  fit();
  const clicked = () => new Promise((resolve) => { button.onclick = resolve; });
  let stream = null;
  try {
    await clicked();
    stream = await navigator.mediaDevices.getUserMedia({audio: true});
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    recorder.ondataavailable = (event) => { if (event.data.size) chunks.push(event.data); };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    recorder.start();
    button.textContent = 'Stop recording';
    status.textContent = ' recording: speak now';
    await clicked();
    recorder.stop();
    await stopped;
    const blob = new Blob(chunks, {type: recorder.mimeType || 'audio/webm'});
    return await new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  } finally {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    area.remove();
  }
})()
"""

TAKE_PHOTO_JS = """
(async () => {
  const fit = () => window.google?.colab?.output?.setIframeHeight?.(document.documentElement.scrollHeight, true);
  const area = document.createElement('div');
  const video = document.createElement('video');
  const button = document.createElement('button');
  video.style.display = 'block';
  video.style.maxWidth = '480px';
  button.textContent = 'Take photo';
  area.append(video, button);
  document.body.append(area);
  let stream = null;
  try {
    stream = await navigator.mediaDevices.getUserMedia({video: true});
    video.srcObject = stream;
    await video.play();
    fit();
    await new Promise((resolve) => { button.onclick = resolve; });
    const canvas = document.createElement('canvas');
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext('2d').drawImage(video, 0, 0);
    return canvas.toDataURL('image/jpeg', 0.95);
  } finally {
    if (stream) stream.getTracks().forEach((track) => track.stop());
    area.remove();
  }
})()
"""


def in_colab() -> bool:
    try:
        import google.colab  # noqa: F401
    except ImportError:
        return False
    return True


def gpu_status() -> str:
    """One line on the accelerator; with none, how to get one in Colab."""
    import torch

    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)}"
    advice = " In Colab: Runtime > Change runtime type > T4 GPU, then run all cells again." if in_colab() else ""
    return f"No GPU found: running on the CPU (about 1 s per frame).{advice}"


@dataclass(frozen=True)
class Medium:
    """One input of a job: the file it uses (None: the photo's own pose) and where that file came from."""

    role: str
    path: Path | None
    name: str
    origin: str  # "uploaded", "recorded", "demo" or "none"

    def __str__(self) -> str:
        if self.path is None:
            return f"{self.role}: none (the photo's own pose)"
        return f"{self.role}: {self.name} ({self.origin})"


def demo(role: str) -> Medium:
    return Medium(role, DEMO[role], DEMO[role].name, "demo")


_uploads: tempfile.TemporaryDirectory | None = None


def upload_folder() -> Path:
    """The one folder that holds the copies of uploads and recordings; removed when Python exits."""
    global _uploads
    if _uploads is None or not Path(_uploads.name).is_dir():
        _uploads = tempfile.TemporaryDirectory(prefix="pcavs-uploads-")
    return Path(_uploads.name)


def keep(role: str, name: str, data: bytes, origin: str = "uploaded") -> Medium:
    """Bytes the browser sent, written as `name` into the upload folder (replacing this role's earlier copy) and
    checked with pcavs's readers."""
    shown = Path(str(name).replace("\\", "/")).name
    if shown in ("", ".", ".."):
        shown = role
    again = "record it" if origin == "recorded" else "upload it"
    if not data:
        raise InputError(f"{shown}: the {origin} {WHAT[role]} is empty (0 bytes); {again} again")
    folder = upload_folder() / role
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    path = folder / shown
    path.write_bytes(data)
    check_file(role, path, shown)
    return Medium(role, path, shown, origin)


def check_file(role: str, path: Path, shown: str) -> None:
    """InputError, naming `shown`, unless pcavs reads `path` as a face photo, speech, or a pose video or image."""
    from ..faces.sources import is_image_file
    from ..media.audio import load_speech
    from ..media.images import read_image
    from ..media.video import iter_frames

    try:
        if role == "face" or (role == "pose" and is_image_file(path)):
            read_image(path, name=shown)
        elif role == "audio":
            load_speech(path)
        else:
            frames = iter_frames(path)
            try:
                if next(frames, None) is None:
                    raise InputError(f"{shown}: the video has no frames; upload another pose video")
            finally:
                frames.close()
    except PcavsError as exc:
        raise InputError(str(exc).replace(str(path), shown)) from None


def uploaded(value: Any) -> list[tuple[str, bytes, int | None]]:
    """The files in an `ipywidgets.FileUpload` value as (name, content, size the browser announced).

    ipywidgets 8: a tuple of {"name", "type", "size", "content", "last_modified"};
    ipywidgets 7: a dict of name -> {"metadata": {"name", "type", "size", ...}, "content"}.
    """
    if not value:
        return []
    if isinstance(value, Mapping):
        items = [(name, item.get("content"), item.get("metadata", {}).get("size")) for name, item in value.items()]
    else:
        items = [(item.get("name", ""), item.get("content"), item.get("size")) for item in value]
    return [(name, bytes(content or b""), size) for name, content, size in items]


def from_upload(role: str, files: list[tuple[str, bytes, int | None]]) -> Medium:
    """The one file uploaded for `role`; with none, the demo file."""
    if not files:
        return demo(role)
    if len(files) > 1:
        names = ", ".join(name for name, _, _ in files)
        raise InputError(f"{role}: {len(files)} files uploaded ({names}); upload one {WHAT[role]}")
    name, data, size = files[0]
    if size is not None and size != len(data):
        raise InputError(f"{name}: the upload is incomplete ({len(data)} of {size} bytes arrived); upload it again")
    return keep(role, name, data)


def colab_upload(role: str) -> Medium:
    """Colab's own file picker for `role` (blocks until the user picks a file or cancels: then the demo)."""
    from google.colab import files

    print(f"{role}: choose the {WHAT[role]}, or press Cancel upload to use the demo file")
    received = files.upload()
    return from_upload(role, [(name, bytes(data), None) for name, data in received.items()])


def parse_data_url(url: Any, role: str) -> tuple[str, bytes]:
    """(MIME type, bytes) of a base64 data URL such as 'data:audio/webm;codecs=opus;base64,GkXf...'."""
    match = _DATA_URL.fullmatch(url.strip()) if isinstance(url, str) else None
    if match is None:
        shown = repr(url)[:40]
        raise InputError(f"{role}: the browser returned {shown}, not a base64 data URL; record again or upload a file")
    try:
        data = base64.b64decode(match["data"], validate=True)
    except binascii.Error:
        raise InputError(f"{role}: the browser's recording is not valid base64; record again or upload a file") from None
    return (match["mime"] or "application/octet-stream").lower(), data


def suffix_for(mime: str) -> str:
    return SUFFIXES.get(mime) or mimetypes.guess_extension(mime) or ".bin"


def record(role: str) -> Medium:
    """Record the voice with the microphone ("audio") or take the photo with the webcam ("face").

    Colab only: the browser side (`RECORD_VOICE_JS`, `TAKE_PHOTO_JS`) shows its buttons in the cell's
    output and returns a data URL through `google.colab.output.eval_js`; the bytes (webm/opus or
    ogg audio, a jpeg) are then read like an uploaded file.
    """
    script = {"audio": RECORD_VOICE_JS, "face": TAKE_PHOTO_JS}.get(role)
    if script is None:
        raise InputError(f"{role}: cannot be recorded here; choose one of {', '.join(SOURCES[role])} without 'record'")
    if not in_colab():
        raise InputError(f"{role}: recording with the {DEVICE[role]} needs Colab; record with any app and upload the file")
    from google.colab import output

    action = "press Start recording, speak, then Stop recording" if role == "audio" else "press Take photo"
    print(f"{role}: {action} (allow the {DEVICE[role]} when the browser asks)")
    try:
        url = output.eval_js(script)
    except Exception as exc:  # the browser's error (permission refused, no device) comes back as an exception
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(f"{role}: the browser recorded nothing ({reason}); allow the {DEVICE[role]} or upload a file") from None
    mime, data = parse_data_url(url, role)
    return keep(role, RECORDED_NAME[role] + suffix_for(mime), data, origin="recorded")


class MediaPicker:
    """Where the face, the voice and the pose come from: "upload", "record" (face and audio, in Colab),
    "demo", or for the pose "none" (keep the photo's own pose).

    In Colab the uploads and recordings happen here, one picker or record button per input, in turn.
    In Jupyter each "upload" is a FileUpload widget (display the picker), read by `files()`; an
    empty one means the demo file.
    """

    def __init__(self, face: str = "upload", audio: str = "upload", pose: str = "demo"):
        sources = dict(zip(ROLES, (face, audio, pose)))
        for role, source in sources.items():
            if source not in SOURCES[role]:
                raise InputError(f"{role}: {source!r} is not one of {', '.join(SOURCES[role])}")
        self.chosen: dict[str, Medium] = {}
        self.widgets: dict[str, Any] = {}
        self._read: dict[str, tuple[Any, Medium]] = {}
        colab = in_colab()
        for role, source in sources.items():
            if source == "demo":
                self.chosen[role] = demo(role)
            elif source == "none":
                self.chosen[role] = Medium(role, None, "none", "none")
            elif source == "record" or colab:
                self.chosen[role] = record(role) if source == "record" else colab_upload(role)
                print(self.chosen[role])
            else:
                import ipywidgets as w

                self.widgets[role] = w.FileUpload(accept=ACCEPT[role], multiple=False, description=WHAT[role].split()[0])

    def _ipython_display_(self) -> None:
        from IPython.display import display
        import ipywidgets as w

        rows = [w.HBox([w.Label(f"{role}: upload the {WHAT[role]} (none: the demo file)"), widget])
                for role, widget in self.widgets.items()]
        rows += [w.Label(str(medium)) for medium in self.chosen.values()]
        display(w.VBox(rows))

    def medium(self, role: str) -> Medium:
        """The file `role` uses now (an upload widget is read once per new value)."""
        if role in self.chosen:
            return self.chosen[role]
        value = self.widgets[role].value
        if role not in self._read or self._read[role][0] is not value:
            self._read[role] = (value, from_upload(role, uploaded(value)))
        return self._read[role][1]

    def files(self) -> dict[str, Path | None]:
        """face=, audio=, pose= for `pcavs.generate`, after printing which file each input uses."""
        media = [self.medium(role) for role in ROLES]
        for medium in media:
            print(medium)
        return {medium.role: medium.path for medium in media}


class OptionsForm:
    """A dropdown per job option with a fixed set of values, each built from its `Options` field
    (the choices, the default and the help text)."""

    def __init__(self, names: Iterable[str] = SHOWN_OPTIONS):
        import ipywidgets as w

        specs = {spec.name: spec for spec in fields(Options)}
        self.widgets: dict[str, Any] = {}
        rows = []
        for name in names:
            spec = specs.get(name)
            if spec is None or not spec.metadata["choices"]:
                raise ValueError(f"{name!r} is not an option with a set of choices")
            self.widgets[name] = w.Dropdown(options=list(spec.metadata["choices"]), value=spec.default,
                                            description=name.replace("_", " "))
            rows.append(w.HBox([self.widgets[name], w.HTML(f"<small>{html.escape(spec.metadata['help'])}</small>")]))
        self.box = w.VBox(rows)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.box)

    def values(self) -> dict[str, str]:
        """The chosen options as keyword arguments for `pcavs.generate` (validated by `Options`)."""
        chosen = {name: widget.value for name, widget in self.widgets.items()}
        Options(**chosen)
        return chosen


def picture(image, caption: str, width: int = 480):
    """One frame as a small JPEG with a line under it (IPython HTML: the same in Colab and Jupyter)."""
    import cv2
    from IPython.display import HTML

    ok, jpeg = cv2.imencode(".jpg", image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
    data = base64.b64encode(jpeg.tobytes()).decode("ascii")
    return HTML(f'<img width="{min(width, image.shape[1])}" src="data:image/jpeg;base64,{data}"><br>'
                f'<small>{html.escape(caption)}</small>')


def watch(stream, out: str | Path, every: float = 0.25) -> Path:
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


def show_video(path: str | Path, width: int = 480):
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
        source = "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    elif colab:
        source = _colab_url(path)
    elif local is not None:
        source = local
    else:
        return HTML(f"<p>{name} ({size / 1e6:.1f} MB) is too large to embed and lies outside this notebook's folder: "
                    f"{html.escape(str(path.resolve()))}</p>")
    link = f'<br><a download="{name}" href="{html.escape(local)}">Download {name}</a>' if local is not None else ""
    return HTML(f'<video width="{int(width)}" controls src="{html.escape(source)}"></video>{link}')


def _notebook_url(path: Path) -> str | None:
    """`path` as a URL relative to the notebook (its kernel's working folder), or None when it lies outside."""
    relative = os.path.relpath(path.resolve(), Path.cwd().resolve())
    if relative.startswith(".."):
        return None
    return urllib.parse.quote(Path(relative).as_posix())


class _Files(http.server.ThreadingHTTPServer):
    """Serves the files `show_video` registered, each under a random name, on 127.0.0.1 (with byte ranges, so
    the browser's player can seek)."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _FileHandler)
        self.files: dict[str, Path] = {}
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def add(self, path: Path) -> str:
        token = secrets.token_urlsafe(16)
        self.files[token] = path.resolve()
        return f"{token}/{urllib.parse.quote(path.name)}"


class _FileHandler(http.server.BaseHTTPRequestHandler):
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
        pass


_files: _Files | None = None


def _colab_url(path: Path) -> str:
    """A URL where the browser gets `path` in Colab: a small file server in this kernel, reached through the
    address Colab proxies to its port (`google.colab.kernel.proxyPort`)."""
    global _files
    from google.colab import output

    if _files is None:
        _files = _Files()
    base = output.eval_js(f"google.colab.kernel.proxyPort({_files.server_address[1]}, {{'cache': false}})")
    return f"{str(base).rstrip('/')}/{_files.add(path)}"


def download(path: str | Path) -> None:
    """In Colab the browser saves the file; elsewhere, where it is (the link under the player saves it too)."""
    path = Path(path)
    if in_colab():
        from google.colab import files

        files.download(str(path))
    else:
        print(f"The video is at {path.resolve()}; the link under the player downloads it.")
