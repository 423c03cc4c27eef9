"""What a media file holds, from the stream summary `ffmpeg -i FILE` prints (imageio-ffmpeg's build has no ffprobe)."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import InputError
from .ffmpeg import QUICK, file_url, last_line, run

# Channel counts of the layout names ffmpeg prints ("5.1(side)" is looked up as "5.1").
_LAYOUT_CHANNELS = {
    "mono": 1, "stereo": 2, "downmix": 2, "2.1": 3, "3.0": 3, "3.1": 4, "4.0": 4, "quad": 4, "4.1": 5,
    "5.0": 5, "5.1": 6, "6.0": 6, "hexagonal": 6, "6.1": 7, "7.0": 7, "7.1": 8, "octagonal": 8,
    "cube": 8, "5.1.2": 8, "5.1.4": 10, "7.1.2": 10, "7.1.4": 12, "7.2.3": 12, "9.1.4": 14,
    "9.1.6": 16, "hexadecagonal": 16, "22.2": 24, "binaural": 2,
}


@dataclass(frozen=True)
class MediaInfo:
    """What `ffmpeg -i` says about a file: the first video stream (cover art excluded) and the first audio stream."""

    path: str
    duration: float | None  # seconds, of the whole file; None when the container does not say
    has_video: bool
    has_audio: bool
    width: int | None = None  # as displayed: rotation and pixel aspect ratio applied
    height: int | None = None
    fps: float | None = None  # nominal (average) rate; a variable-frame-rate file has no single one
    base_fps: float | None = None  # ffmpeg's "tbr", the rate it guesses the frames are timed at: unlike fps in a variable-rate file
    rotation: int = 0  # degrees clockwise the stored picture is turned for display (a portrait phone clip: 90 or 270)
    video_codec: str | None = None
    pix_fmt: str | None = None
    coded_width: int | None = None  # as stored in the stream
    coded_height: int | None = None
    sar: float = 1.0  # sample (pixel) aspect ratio
    video_start: float | None = None  # seconds, where ffmpeg reports it
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    audio_start: float | None = None
    start: float | None = None  # seconds, start of the file


def probe(path: str | os.PathLike) -> MediaInfo:
    """Stream facts of a media file; InputError when it is missing, a folder, or not something ffmpeg reads."""
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; give a media file")
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    try:
        report = run(["-i", file_url(path)], QUICK, loglevel="info").stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        raise InputError(f"{path}: ffmpeg could not read it within {QUICK} s; copy it to a local disk") from None
    info = parse_report(report, path)
    if not info.has_video and not info.has_audio:
        reason = last_line(report)
        if "At least one output file" in reason or "Output file" in reason:
            reason = "no audio or video stream"
        raise InputError(f"{path}: not a readable audio or video file ({reason}); is it complete and a media file?")
    return info


def parse_report(report: str, path: str | os.PathLike = "") -> MediaInfo:
    """MediaInfo from the text `ffmpeg -i` writes to stderr (the first input only)."""
    duration = start = None
    video = audio = None
    for kind, header, block in _streams(report):
        if kind == "Video" and video is None and "(attached pic)" not in header:
            video = (header, block)
        elif kind == "Audio" and audio is None:
            audio = (header, block)
    found = re.search(r"^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", report, re.M)
    if found:
        hours, minutes, seconds = found.groups()
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    found = re.search(r"^\s*Duration: .*?, start: (-?[\d.]+)", report, re.M)
    if found:
        start = float(found.group(1))
    facts: dict = dict(path=str(path), duration=duration, start=start, has_video=video is not None, has_audio=audio is not None)
    if video is not None:
        facts.update(_video_facts(*video))
    if audio is not None:
        facts.update(_audio_facts(*audio))
    return MediaInfo(**facts)


def _streams(report: str):
    """(kind, header, lines indented under it) for each `Stream #0:n` line of the first input."""
    current = None  # [kind, header, block, indent]
    for line in report.splitlines():
        if line.startswith(("Input #", "Output #", "Stream mapping")) and not line.startswith("Input #0"):
            break
        found = re.match(r"(\s*)Stream #0:\d+\S*: (\w+): (.*)$", line)
        indent = len(line) - len(line.lstrip())
        if found:
            if current is not None:
                yield tuple(current[:3])
            current = [found.group(2), found.group(3), [], indent]
        elif current is not None and line.strip() and indent >= current[3]:  # old builds put "Metadata:" level with "Stream"
            current[2].append(line.strip())
        elif current is not None:
            yield tuple(current[:3])
            current = None
    if current is not None:
        yield tuple(current[:3])


def _fields(header: str) -> list[str]:
    """Split a stream header at commas outside parentheses and brackets."""
    fields, depth, field = [], 0, ""
    for char in header:
        if char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        if char == "," and depth == 0:
            fields.append(field.strip())
            field = ""
        else:
            field += char
    fields.append(field.strip())
    return fields


def _number(text: str) -> float:
    """ffmpeg's short numbers: `29.97`, `30`, `1k`, `90k`."""
    return float(text[:-1]) * 1000 if text.endswith("k") else float(text)


def _start(fields: list[str]) -> float | None:
    for field in fields:
        found = re.match(r"start (-?[\d.]+)", field)
        if found:
            return float(found.group(1))
    return None


def _video_facts(header: str, block: list[str]) -> dict:
    fields = _fields(header)
    codec = fields[0].split()[0] if fields[0] else None
    width = height = fps = tbr = pix_fmt = None
    sar = 1.0
    for index, field in enumerate(fields[1:], 1):
        size = re.match(r"(\d+)x(\d+)\b", field)
        if size and width is None:
            width, height = int(size.group(1)), int(size.group(2))
        elif index == 1 and re.match(r"[a-z][a-z0-9_]*(\(|$)", field):
            pix_fmt = field.split("(")[0]
        ratio = re.search(r"SAR (\d+):(\d+)", field)
        if ratio and int(ratio.group(1)) > 0 and int(ratio.group(2)) > 0:
            sar = int(ratio.group(1)) / int(ratio.group(2))
        rate = re.match(r"([\d.]+k?) (fps|tbr)$", field)
        if rate and rate.group(2) == "fps":
            fps = _number(rate.group(1))
        elif rate:
            tbr = _number(rate.group(1))
    angle = 0.0
    for line in block:
        found = re.search(r"rotation of (-?[\d.]+) degrees", line, re.I)
        if found:
            angle = float(found.group(1))
    # ffmpeg prints the counter-clockwise angle of the display matrix; report the clockwise turn like phones' `rotate` tag
    rotation = int(round(-angle)) % 360
    facts = dict(video_codec=codec, pix_fmt=pix_fmt, fps=fps or tbr, base_fps=tbr or fps, rotation=rotation, sar=sar,
                 coded_width=width, coded_height=height, video_start=_start(fields))
    if width and height:
        shown_w, shown_h = max(1, round(width * sar)), height
        if rotation in (90, 270):
            shown_w, shown_h = shown_h, shown_w
        facts.update(width=shown_w, height=shown_h)
    return facts


def _audio_facts(header: str, block: list[str]) -> dict:
    fields = _fields(header)
    codec = fields[0].split()[0] if fields[0] else None
    rate = channels = None
    for index, field in enumerate(fields):
        found = re.match(r"(\d+) Hz$", field)
        if found:
            rate = int(found.group(1))
            if index + 1 < len(fields):
                layout = fields[index + 1]
                count = re.match(r"(\d+) channels", layout)
                channels = int(count.group(1)) if count else _LAYOUT_CHANNELS.get(layout.split("(")[0].strip())
            break
    return dict(audio_codec=codec, sample_rate=rate, channels=channels, audio_start=_start(fields))
