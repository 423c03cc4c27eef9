"""Small test media made at test time: a speech-like tone and videos from RGB frames, with the real ffmpeg."""
from __future__ import annotations

import math
import subprocess
from pathlib import Path

import numpy as np

from pcavs.media.ffmpeg import ffmpeg_exe


def write_video(path: Path, frames: list[np.ndarray], fps: float, extra: tuple[str, ...] = ()) -> Path:
    """H.264 video of RGB `frames` at `fps`; `extra` ffmpeg arguments go after the input (filters, timing)."""
    h, w = frames[0].shape[:2]
    command = [ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "pipe:0", *extra, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "12", str(path)]
    subprocess.run(command, input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return path


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    """A speech-like signal: a few harmonics under a syllable-rate envelope."""
    t = np.arange(round(seconds * rate)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * math.pi * 4 * t)
    signal = sum(np.sin(2 * math.pi * f * t) / k for k, f in enumerate((220, 440, 660, 1320), 1))
    mono = (0.3 * envelope * signal).astype(np.float32)
    return np.stack([mono] * channels, axis=1) if channels > 1 else mono
