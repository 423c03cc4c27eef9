"""The ffmpeg binary (the one imageio-ffmpeg ships, so no system install is needed) and a probe of media files."""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: imageio-ffmpeg's own, else one on PATH."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        found = shutil.which("ffmpeg")
        if found is None:
            raise InputError("ffmpeg not found: pip install imageio-ffmpeg (it ships the binary)") from None
        return found


@dataclass(frozen=True)
class MediaInfo:
    """What `ffmpeg -i` reports about a file (the first video and first audio stream)."""

    duration: float | None
    has_video: bool
    has_audio: bool
    width: int | None = None  # as displayed, rotation applied
    height: int | None = None
    fps: float | None = None
    rotation: int = 0
    video_codec: str | None = None
    pix_fmt: str | None = None
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None


_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "4.0": 4, "5.0": 5, "5.1": 6, "6.1": 7, "7.1": 8}


def probe(path: str | os.PathLike) -> MediaInfo:
    """Read stream facts from ffmpeg's report; InputError for a missing or unreadable file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    report = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)], capture_output=True, text=True, errors="replace"
    ).stderr
    video = re.search(r"Stream #\S+.*?: Video: (\w+).*", report)
    audio = re.search(r"Stream #\S+.*?: Audio: (\w+).*", report)
    if video is None and audio is None:
        raise InputError(f"{path}: not a readable audio, video or image file ({last_line(report)})")
    duration = re.search(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)", report)
    seconds = None
    if duration:
        h, m, s = duration.groups()
        seconds = int(h) * 3600 + int(m) * 60 + float(s)
    info = dict(duration=seconds, has_video=video is not None, has_audio=audio is not None)
    if video is not None:
        line = video.group(0)
        size = re.search(r"(?<![\dx])(\d{2,5})x(\d{2,5})(?![\dx])", line)
        fps = re.search(r"([\d.]+) fps", line) or re.search(r"([\d.]+) tbr", line)
        pix = re.search(r"Video: \w+[^,]*, (\w+)", line)
        rotation = re.search(r"rotation of (-?[\d.]+) degrees", report)
        angle = int(round(float(rotation.group(1)))) % 360 if rotation else 0
        width, height = (int(size.group(1)), int(size.group(2))) if size else (None, None)
        if angle in (90, 270) and width:
            width, height = height, width
        info.update(
            width=width, height=height, fps=float(fps.group(1)) if fps else None, rotation=angle,
            video_codec=video.group(1), pix_fmt=pix.group(1) if pix else None,
        )
    if audio is not None:
        line = audio.group(0)
        rate = re.search(r"(\d+) Hz", line)
        layout = re.search(r"Hz, ([\w.()]+)", line)
        channels = None
        if layout:
            name = layout.group(1).split("(")[0]
            count = re.match(r"(\d+) channels", line[layout.start(1):])
            channels = _CHANNELS.get(name) or (int(count.group(1)) if count else None)
        info.update(audio_codec=audio.group(1), sample_rate=int(rate.group(1)) if rate else None, channels=channels)
    return MediaInfo(**info)


def last_line(report: str) -> str:
    lines = [line.strip() for line in report.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else "ffmpeg gave no reason"

