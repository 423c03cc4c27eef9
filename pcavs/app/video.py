"""One video request of the server: its uploads checked (before it queues) and its frames made (on a device).

`check_inputs` runs on the request's own thread: each bad file is a one-line error naming the user's
own file name. `make_video` runs on a device's thread (or a Ray Serve replica): it streams the frames,
each as a JPEG as soon as it is made, writes the mp4 from the same frames, and gives events:
("stage", text), ("frame", index, jpeg, total), ("video", path).
"""
from __future__ import annotations

import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator

from ..core.errors import InputError, renamed
from ..core.options import Options
from ..media.images import encode_jpeg, read_image
from .jobs import RESULT_NAME, Inputs
from .limits import Limits

JPEG_QUALITY = 85
STAGE_EVERY = 0.1  # s between looks at the stage of a job that has no frame yet


def check_inputs(limits: Limits, folder: Path, face: tuple[str, str] | None, audio: tuple[str, str] | None,
                 pose: tuple[str, str] | None) -> Inputs:
    """The request's files, each (server path, the user's file name), checked against the server's limits."""
    if face is None:
        raise InputError("photo: upload a photo or take one with the webcam")
    if audio is None:
        raise InputError("voice: upload a recording or record one with the microphone")
    shown = {path: name for path, name in (face, audio, pose or ("", "")) if path}
    try:
        read_image(face[0], name=face[1])
    except InputError as exc:
        raise InputError(renamed(str(exc), {face[0]: face[1]})) from None
    voice = limits.voice(audio[0], audio[1], folder)
    shown[str(voice)] = audio[1]
    if pose is not None:
        limits.pose(pose[0], pose[1])
    return Inputs(Path(face[0]), voice, Path(pose[0]) if pose else None, shown)


def make_video(pipeline: Any, inputs: Inputs, options: Options, folder: Path,
               stage: Callable[[str], None]) -> Iterator[tuple]:
    """The job on `pipeline`: frames as they are made, then the mp4 (`folder`/talking_face.mp4, whole or absent);
    `stage` hears what the job is doing while no frame comes (reading the voice, finding the face, ...)."""
    out = folder / RESULT_NAME
    stream = pipeline.stream(str(inputs.face), str(inputs.voice), str(inputs.pose) if inputs.pose else None,
                             **asdict(options))
    first = threading.Event()

    def watch() -> None:
        while not first.wait(STAGE_EVERY):
            stage(stream.stage)

    threading.Thread(target=watch, name="pcavs-stage", daemon=True).start()
    try:
        with stream.record(None, out=out) as recording:
            for frame in stream:
                first.set()
                recording.add(frame)
                yield "frame", frame.index, encode_jpeg(frame.image, JPEG_QUALITY), stream.total
            yield "stage", "writing the mp4"
            recording.finish()
    finally:
        first.set()
    yield "video", out
