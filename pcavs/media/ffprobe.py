"""A small `ffprobe` on PyAV, for programs that look for one on PATH (Gradio's streaming video, pydub).

The imageio-ffmpeg wheel ships `ffmpeg` but no `ffprobe`. PyAV's wheels bundle FFmpeg's libraries,
so this module answers the questions those programs ask, in ffprobe's own output formats:

    ffprobe [-v LEVEL] [-print_format|-of json|csv=p=0|default=nokey=1] [-show_format] [-show_streams]
            [-select_streams v|a] [-show_entries format=duration] [-i] FILE

`tools_folder()` makes a folder holding `ffprobe` (this module) and `ffmpeg` (the binary pcavs
uses) for a process to put on its PATH. Run as `python -m pcavs.media.ffprobe ARGS`.
"""
from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

from .ffmpeg import ffmpeg_exe

QUIET_LEVELS = ("quiet", "panic", "fatal", "error", "warning", "-8", "0", "8", "16", "24")
KINDS = {"v": "video", "a": "audio", "s": "subtitle", "d": "data"}


def _seconds(value: int | None, base: Fraction | None) -> float | None:
    return None if value is None or base is None else float(value * base)


def _fraction(rate: Fraction | None) -> str:
    return f"{rate.numerator}/{rate.denominator}" if rate else "0/0"


def _packet_spans(container) -> dict[int, tuple[float, float]]:
    """(first, end) time of each stream measured from its packets: MPEG-TS stores no stream durations."""
    spans: dict[int, list[float]] = {}
    for packet in container.demux():
        if packet.pts is None or packet.time_base is None:
            continue
        start = float(packet.pts * packet.time_base)
        end = start + float((packet.duration or 0) * packet.time_base)
        span = spans.setdefault(packet.stream.index, [start, end])
        span[0], span[1] = min(span[0], start), max(span[1], end)
    return {index: (first, end) for index, (first, end) in spans.items()}


def describe(path: str) -> dict[str, Any]:
    """What ffprobe's `-show_format -show_streams` reports about `path` (the fields programs read)."""
    import av

    with av.open(path) as container:
        streams = list(container.streams)
        spans = None
        if any(s.duration is None for s in streams):
            spans = _packet_spans(container)
        described = []
        for stream in streams:
            context = stream.codec_context
            entry: dict[str, Any] = {"index": stream.index, "codec_name": context.name if context else "none",
                                     "codec_type": stream.type, "time_base": _fraction(stream.time_base)}
            start = _seconds(stream.start_time, stream.time_base)
            duration = _seconds(stream.duration, stream.time_base)
            if spans is not None and stream.index in spans:
                first, end = spans[stream.index]
                start = first if start is None else start
                duration = end - first if duration is None else duration
            if stream.type == "video":
                entry.update(width=context.width, height=context.height, pix_fmt=context.pix_fmt or "unknown",
                             r_frame_rate=_fraction(stream.base_rate or stream.average_rate),
                             avg_frame_rate=_fraction(stream.average_rate))
                if stream.frames:
                    entry["nb_frames"] = str(stream.frames)
            elif stream.type == "audio":
                entry.update(sample_fmt=context.format.name if context.format else "unknown",
                             sample_rate=str(context.sample_rate), channels=context.channels,
                             channel_layout=context.layout.name if context.layout else "unknown",
                             bits_per_sample=context.format.bits if context.format and context.codec.name.startswith("pcm") else 0)
            if start is not None:
                entry["start_time"] = f"{start:.6f}"
            if duration is not None:
                entry["duration"] = f"{duration:.6f}"
            if context is not None and context.bit_rate:
                entry["bit_rate"] = str(context.bit_rate)
            described.append(entry)
        whole = {"filename": path, "nb_streams": len(streams), "format_name": container.format.name,
                 "format_long_name": container.format.long_name, "size": str(os.path.getsize(path))}
        if container.start_time is not None:
            whole["start_time"] = f"{container.start_time / 1e6:.6f}"
        if container.duration is not None:
            whole["duration"] = f"{container.duration / 1e6:.6f}"
        elif spans:
            whole["duration"] = f"{max(end for _, end in spans.values()) - min(first for first, _ in spans.values()):.6f}"
        if container.bit_rate:
            whole["bit_rate"] = str(container.bit_rate)
    return {"streams": described, "format": whole}


def _stream_line(entry: dict[str, Any]) -> str:
    """ffprobe's log line for a stream, which pydub parses from stderr."""
    if entry["codec_type"] == "audio":
        details = f"{entry['codec_name']}, {entry['sample_rate']} Hz, {entry['channel_layout']}, {entry['sample_fmt']}"
    elif entry["codec_type"] == "video":
        details = f"{entry['codec_name']}, {entry['pix_fmt']}, {entry['width']}x{entry['height']}"
    else:
        details = entry["codec_name"]
    return f"  Stream #0:{entry['index']}: {entry['codec_type'].capitalize()}: {details}"


def run(argv: list[str]) -> tuple[int, str, str]:
    """ffprobe with `argv`: (exit status, stdout, stderr)."""
    show_format = show_streams = False
    select, output, level, entries, path = None, "json", "info", None, None
    args = iter(argv)
    for arg in args:
        if arg in ("-show_format", "-show_streams"):
            show_format |= arg == "-show_format"
            show_streams |= arg == "-show_streams"
        elif arg in ("-print_format", "-of", "-output_format"):
            output = next(args, "")
        elif arg in ("-v", "-loglevel"):
            level = next(args, "info")
        elif arg == "-select_streams":
            select = KINDS.get(next(args, ""), "")
        elif arg == "-show_entries":
            entries = next(args, "")
        elif arg == "-i":
            path = next(args, None)
        elif not arg.startswith("-"):
            path = arg
    if path is None:
        return 1, "", "ffprobe: no input file given\n"
    bare = output.startswith("csv") or "nokey=1" in output  # values only, one per line
    if output != "json" and not (bare and entries):
        return 1, "", f"ffprobe: output format {output!r} is only answered with -show_entries (this is pcavs's ffprobe)\n"
    try:
        report = describe(path.removeprefix("file:"))
    except Exception as exc:  # noqa: BLE001 - every failure is reported as ffprobe reports one: a line and status 1
        return 1, "", f"{path}: {exc}\n"
    streams = [s for s in report["streams"] if select is None or s["codec_type"] == select]
    log = "" if level in QUIET_LEVELS else "".join(_stream_line(s) + "\n" for s in report["streams"])
    if entries:  # e.g. format=duration
        section, _, keys = entries.partition("=")
        wanted = [k for k in keys.split(",") if k]
        rows = [report["format"]] if section == "format" else streams
        chosen = [{k: row[k] for k in wanted if k in row} for row in rows]
        if bare:
            return 0, "".join(",".join(str(v) for v in row.values()) + "\n" for row in chosen), log
        return 0, json.dumps({"format": chosen[0]} if section == "format" else {"streams": chosen}, indent=4) + "\n", log
    result: dict[str, Any] = {}
    if show_streams:
        result["streams"] = streams
    if show_format:
        result["format"] = report["format"]
    return 0, json.dumps(result, indent=4) + "\n", log


def tools_folder(folder: str | os.PathLike) -> Path:
    """Write `ffprobe` (this module, run by this Python) and `ffmpeg` (pcavs's binary) into `folder`
    for a PATH; POSIX shells only."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / "ffprobe"
    probe.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -m pcavs.media.ffprobe \"$@\"\n")
    probe.chmod(0o755)
    binary = folder / "ffmpeg"
    binary.unlink(missing_ok=True)
    binary.symlink_to(shutil.which(ffmpeg_exe()) or ffmpeg_exe())
    return folder


def main() -> int:
    status, out, err = run(sys.argv[1:])
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main())
