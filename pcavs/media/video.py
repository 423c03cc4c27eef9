"""Video through ffmpeg pipes: frames decoded at 25 fps one at a time, and frames written into an H.264 + AAC mp4
as they come."""
from __future__ import annotations

import math
import os
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from ..core.errors import InputError, PcavsError
from ..core.facts import FPS
from ..core.files import AtomicFile, folder_writable
from .ffmpeg import Ffmpeg, file_url
from .probe import MediaInfo, probe

AAC_RATES = (44100, 48000)  # sample rates kept as they are in the output; others are resampled to 48 kHz
AAC_BITRATE = "160k"
X264_CRF = "18"  # visually lossless for faces
X264_PRESET = "fast"


def frame_size(info: MediaInfo, max_side: int | None = None) -> tuple[int, int]:
    """(width, height) of the frames `iter_frames` gives: as displayed, then shrunk so neither side exceeds `max_side`."""
    width, height = info.width, info.height
    if max_side is not None:
        if int(max_side) != max_side or max_side < 1:
            raise ValueError(f"max_side must be a positive whole number of pixels, got {max_side!r}")
        scale = min(1.0, max_side / max(width, height))
        width, height = max(1, round(width * scale)), max(1, round(height * scale))
    return width, height


def _rate(fps: float) -> str:
    """A frame rate as the exact fraction ffmpeg reads (29.97 -> 2997/100, 30000/1001 stays)."""
    if not fps > 0 or not math.isfinite(fps):
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    value = Fraction(fps).limit_denominator(1_000_000) if isinstance(fps, float) else Fraction(fps)
    return f"{value.numerator}/{value.denominator}"


def _resample_filter(fps: float) -> str:
    # round=up: output frame k takes the last source frame whose timestamp is <= k/fps, i.e. the
    # frame on screen at that instant (the default, nearest, would show frames before their time)
    return f"fps=fps={_rate(fps)}:round=up"


def _video_info(path: str | os.PathLike) -> MediaInfo:
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        raise InputError(f"{path}: has no video stream; give a video (mp4, mov, webm, mkv, avi, gif...)")
    return info


def iter_frames(path: str | os.PathLike, fps: float = FPS, max_side: int | None = None) -> Iterator[np.ndarray]:
    """RGB uint8 (height, width, 3) frames of a video, resampled to `fps` by presentation time, streamed.

    Frame k is the source frame on screen at time k/fps (counted from the first frame), so
    30, 24, 60 fps and variable-frame-rate sources all keep their motion timing; a source of
    duration d gives ceil(d * fps) frames. Rotation metadata is applied (a portrait phone clip
    comes out portrait) and non-square pixels are made square. `max_side` shrinks frames so
    neither side exceeds it. The file is checked at once (InputError if it is unreadable or
    has no video); decoding runs as the frames are taken, and stops when the iterator is closed.
    """
    info = _video_info(path)
    width, height = frame_size(info, max_side)
    shrink = width < info.width or height < info.height
    flags = "area" if shrink else "bicubic"
    graph = f"{_resample_filter(fps)},scale={width}:{height}:flags={flags},setsar=1,format=rgb24"
    args = ["-i", file_url(path), "-map", "0:v:0", "-an", "-sn", "-dn", "-vf", graph,
            "-pix_fmt", "rgb24", "-f", "rawvideo", "pipe:1"]
    return _frames(path, args, height, width)


def _frames(path, args: list[str], height: int, width: int) -> Iterator[np.ndarray]:
    size = height * width * 3
    run = Ffmpeg(args, stdout=subprocess.PIPE)
    count = 0
    try:
        while True:
            frame = np.empty((height, width, 3), np.uint8)
            view, filled = memoryview(frame).cast("B"), 0
            while filled < size:
                got = run.proc.stdout.readinto(view[filled:])
                if not got:
                    break
                filled += got
            view.release()
            if filled < size:
                break
            count += 1
            yield frame
        status, reason = run.finish()
    finally:
        run.close()
    if status != 0:
        raise InputError(f"{path}: decoding the video failed after {count} frames ({reason}); is the file complete?")
    if count == 0:
        raise InputError(f"{path}: no video frames could be decoded; is the file complete?")


class VideoWriter:
    """Pipe RGB frames into an H.264 (yuv420p, BT.709) + AAC mp4 at a constant `fps`; the file appears at `out` only complete.

    Use as a context manager and call `write(frame)` for each frame. Frame k is shown at k/fps;
    the audio (the first audio stream of `audio`, any container, AAC-encoded) starts at 0.
    Frames go to a hidden temporary file beside `out`, renamed over it when ffmpeg has
    finished well; on any exception (Ctrl-C included) ffmpeg is killed and the temporary file
    removed, and an existing `out` is left untouched. `.mov` and `.mkv` names get those
    containers; any other name gets mp4.
    """

    def __init__(self, out: str | os.PathLike, width: int, height: int, audio: str | os.PathLike | None = None,
                 fps: int = FPS):
        if width < 2 or height < 2 or width % 2 or height % 2:
            raise ValueError(f"H.264 with yuv420p needs even sizes of at least 2, got {width}x{height}; pad the frames")
        self.out = Path(out)
        self.size = (int(height), int(width), 3)
        self.fps = fps
        self.frames = 0
        folder = self.out.absolute().parent
        if not folder.is_dir():
            what = " (a file has that name)" if folder.exists() else ""
            raise InputError(f"{folder}: the output folder does not exist{what}; create it or choose another output path")
        if self.out.is_dir():
            raise InputError(f"{self.out}: is a folder; give a file name for the video, such as {self.out / 'out.mp4'}")
        if not folder_writable(folder):
            raise InputError(f"{folder}: the output folder is not writable; choose another output path")
        self.audio = None
        if audio is not None:
            info = probe(audio)
            if not info.has_audio:
                raise InputError(f"{audio}: has no audio track; give a speech file or a video with sound")
            self.audio = (Path(audio), info)
        self.file = AtomicFile(self.out)
        self._run: Ffmpeg | None = None

    def _command(self) -> list[str]:
        height, width, _ = self.size
        rate = _rate(self.fps)
        args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "pipe:0"]
        maps = ["-map", "0:v:0"]
        if self.audio is not None:
            path, info = self.audio
            rate_hz = info.sample_rate if info.sample_rate in AAC_RATES else 48000
            channels = 1 if info.channels == 1 else 2
            # asetpts: timestamps from the sample count, so the sound starts at 0 whatever the source's start time
            args += ["-i", file_url(path)]
            filters = "asetpts=N/SR/TB"
            if (info.audio_codec or "").startswith("pcm_f"):  # float samples may hold NaN/inf, which AAC refuses
                filters = "aeval=exprs='if(isnan(val(ch)),0,clip(val(ch),-1,1))':c=same," + filters
            maps += ["-map", "1:a:0", "-af", filters, "-c:a", "aac", "-b:a", AAC_BITRATE,
                     "-ar", str(rate_hz), "-ac", str(channels)]
        suffix = self.out.suffix.lower()
        container = {".mov": "mov", ".mkv": "matroska"}.get(suffix, "mp4")
        return [
            *args, *maps,
            "-vf", "scale=out_color_matrix=bt709:out_range=tv:flags=bicubic+accurate_rnd,format=yuv420p",
            "-c:v", "libx264", "-preset", X264_PRESET, "-crf", X264_CRF, "-pix_fmt", "yuv420p",
            "-colorspace", "bt709", "-color_primaries", "bt709", "-color_trc", "bt709", "-color_range", "tv",
            "-r", rate, "-fps_mode", "cfr",
            *(["-movflags", "+faststart"] if container != "matroska" else []),
            "-f", container, "-y", file_url(self.file.path),
        ]

    def __enter__(self) -> "VideoWriter":
        self.file.claim()  # the hidden name (and learn early whether the folder takes new files)
        try:
            self._run = Ffmpeg(self._command(), stdin=subprocess.PIPE)
        except BaseException as exc:
            self.file.discard()
            if isinstance(exc, OSError):
                raise PcavsError(f"{self.out}: cannot start ffmpeg ({exc})") from None
            raise
        return self

    @property
    def proc(self) -> subprocess.Popen | None:
        """The running ffmpeg (None outside the `with` block)."""
        return self._run.proc if self._run is not None else None

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of the writer's size (height, width, 3)."""
        if self._run is None:
            raise RuntimeError("VideoWriter.write needs the writer opened: use `with VideoWriter(...) as writer:`")
        if frame.shape != self.size or frame.dtype != np.uint8:
            raise ValueError(f"frame is {frame.shape} {frame.dtype}; this video needs {self.size} uint8")
        try:
            self._run.proc.stdin.write(memoryview(np.ascontiguousarray(frame)).cast("B"))
        except OSError:
            raise PcavsError(f"{self.out}: writing the video failed ({self._stopped()}); check the free disk space and try again") from None
        self.frames += 1

    def _stopped(self) -> str:
        """Why ffmpeg stopped taking frames (it is stopped for good if it was not yet)."""
        self._run.proc.kill()
        self._run.proc.wait()
        return self._run.reason()

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._run is None:
            return
        try:
            if exc_type is None:
                self._finish()
        finally:
            self._run.close()
            self._run = None
            self.file.discard()

    def _finish(self) -> None:
        if self.frames == 0:
            raise PcavsError(f"{self.out}: no frames were written, so no video was made")
        try:
            self._run.proc.stdin.close()
        except OSError:
            pass
        if self._run.wait() != 0:
            raise PcavsError(f"{self.out}: writing the video failed ({self._run.reason()}); check the free disk space and try again")
        self.file.commit()
