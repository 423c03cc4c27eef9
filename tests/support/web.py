"""The web app launched inside a test, on loopback, and small inputs for it."""
from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile as sf

from support.kits import INPUTS


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def launched(checkpoints: Path, **options) -> Iterator:
    """`pcavs.serve(...)` on 127.0.0.1 and a free port, without blocking; closed (folders removed) afterwards."""
    import pcavs

    served = pcavs.serve(port=free_port(), checkpoints=checkpoints, device="cpu", block=False, **options)
    try:
        yield served
    finally:
        served.close()


def short_speech(folder: Path, seconds: float, name: str = "voice.wav") -> Path:
    """The first `seconds` of the kit's speech as a 16 kHz wav."""
    data, rate = sf.read(INPUTS / "speech_short.wav", dtype="float32")
    path = folder / name
    sf.write(path, data[: round(seconds * rate)], rate)
    return path


def grey_photo(folder: Path) -> Path:
    """A photo with no face in it."""
    import cv2

    path = folder / "wall.png"
    cv2.imwrite(str(path), np.full((240, 320, 3), 128, np.uint8))
    return path
