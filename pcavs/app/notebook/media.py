"""The media a job uses: uploaded, recorded or the demo, each copied into one temporary folder and checked with
the readers pcavs uses for any file.

Recording runs in the browser: `record_voice.js` and `take_photo.js` (beside this module) show their buttons in
the cell's output and resolve to a data URL of what the browser recorded, which Colab's `eval_js` hands back.
"""
from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import shutil
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

from ...core.assets import DEMO_AUDIO, DEMO_FACE, DEMO_POSE
from ...core.errors import InputError, PcavsError
from .runtime import in_colab

ROLES = ("face", "audio", "pose")  # the keyword arguments of `pcavs.generate` that take media
WHAT = {"face": "face photo", "audio": "voice recording", "pose": "pose video (or image)"}
DEMO = {"face": DEMO_FACE, "audio": DEMO_AUDIO, "pose": DEMO_POSE}
SOURCES = {"face": ("upload", "record", "demo"), "audio": ("upload", "record", "demo"), "pose": ("upload", "demo", "none")}
ACCEPT = {"face": "image/*", "audio": "audio/*,video/*", "pose": "video/*,image/*"}
DEVICE = {"face": "webcam", "audio": "microphone"}
RECORDED_NAME = {"face": "webcam", "audio": "recording"}
SUFFIXES = {
    "audio/webm": ".webm", "audio/ogg": ".ogg", "audio/mp4": ".m4a", "audio/mpeg": ".mp3", "audio/wav": ".wav",
    "audio/x-wav": ".wav", "audio/wave": ".wav", "image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp",
    "video/webm": ".webm", "video/mp4": ".mp4",
}
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(?:;[^;,]*)*);base64,(?P<data>[A-Za-z0-9+/=]*)")


def _script(name: str) -> str:
    """The text of a browser-side script shipped in this package."""
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


RECORD_VOICE_JS = _script("record_voice.js")  # microphone -> a data URL of webm/opus (or ogg) audio
TAKE_PHOTO_JS = _script("take_photo.js")  # webcam -> a data URL of a jpeg


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
    """The demo file for `role`."""
    return Medium(role, DEMO[role], DEMO[role].name, "demo")


class UploadFolder:
    """A temporary folder made on first use (and again if something removed it), removed when Python exits."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self._folder: tempfile.TemporaryDirectory | None = None

    def path(self) -> Path:
        """The folder, made now if there is none."""
        if self._folder is None or not Path(self._folder.name).is_dir():
            self._folder = tempfile.TemporaryDirectory(prefix=self.prefix)
        return Path(self._folder.name)


_UPLOADS = UploadFolder("pcavs-uploads-")


def upload_folder() -> Path:
    """The one folder that holds the copies of uploads and recordings; removed when Python exits."""
    return _UPLOADS.path()


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
    from ...faces.sources import is_image_file
    from ...media.audio import load_speech
    from ...media.images import read_image
    from ...media.video import iter_frames

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
    """The file suffix for a MIME type the browser recorded in (".bin" for an unknown one)."""
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
