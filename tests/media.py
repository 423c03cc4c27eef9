"""Test media made at test time from the conformance inputs, with the real ffmpeg binary."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import cv2
import numpy as np

from pcavs.ffmpeg import ffmpeg_exe
from pcavs.images import read_image

from conftest import INPUTS

IDENTITY = INPUTS / "identity" / "000000.png"


def similarity(scale: float, degrees: float, offset: tuple[float, float]) -> np.ndarray:
    """2x3: rotate by `degrees` and scale about the crop centre, then move by `offset`."""
    matrix = cv2.getRotationMatrix2D((112, 112), degrees, scale)
    matrix[:, 2] += offset
    return matrix


def place_face(canvas_size: tuple[int, int], matrix: np.ndarray, background: int = 90) -> np.ndarray:
    """The aligned identity crop warped by `matrix` into a plain canvas (height, width)."""
    face = read_image(IDENTITY)
    h, w = canvas_size
    canvas = np.full((h, w, 3), background, np.uint8)
    mask = cv2.warpAffine(np.full((224, 224), 255, np.uint8), matrix, (w, h))
    warped = cv2.warpAffine(face, matrix, (w, h), flags=cv2.INTER_LINEAR)
    return np.where(mask[:, :, None] > 127, warped, canvas)


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def write_video(path: Path, frames: list[np.ndarray], fps: float, extra: tuple[str, ...] = ()) -> Path:
    h, w = frames[0].shape[:2]
    command = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "pipe:0", *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(path)]
    subprocess.run(command, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path


def counter_frame(index: int, size: int = 128) -> np.ndarray:
    """A frame whose 8-bit index is drawn as 8 big black/white blocks (robust to compression)."""
    frame = np.zeros((size, size, 3), np.uint8)
    block = size // 8
    for bit in range(8):
        if index >> bit & 1:
            frame[:, bit * block:(bit + 1) * block] = 255
    return frame


def read_counter(frame: np.ndarray) -> int:
    block = frame.shape[1] // 8
    return sum(1 << bit for bit in range(8) if frame[:, bit * block + block // 4:(bit + 1) * block - block // 4].mean() > 127)


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A speech-like signal: a few harmonics under a syllable-rate envelope."""
    t = np.arange(round(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * math.pi * 4 * t)
    signal = sum(np.sin(2 * math.pi * f * t) / k for k, f in enumerate((220, 440, 660, 1320), 1))
    mono = (0.3 * envelope * signal).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono
