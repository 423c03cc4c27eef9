"""Media through ffmpeg pipes: decode any audio track, decode video frames at 25 fps, write the mp4.

Every ffmpeg gets an argument list (never a shell string) and its input by `file:` URL.
Nothing is held whole that need not be: frames are decoded one at a time and written as they
come; audio is decoded in chunks into one growing buffer (mono is averaged chunk by chunk).
"""
from __future__ import annotations

import functools
import math
import os
import secrets
import subprocess
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, PcavsError
from .ffmpeg import MediaInfo, ffmpeg_exe, file_url, last_line, probe

FPS = 25  # the model's frame rate: every video pcavs reads or writes runs at it
AAC_RATES = (44100, 48000)  # sample rates kept as they are in the output; others are resampled to 48 kHz
AAC_BITRATE = "160k"
X264_CRF = "18"  # visually lossless for faces
X264_PRESET = "fast"
_CHUNK = 1 << 20  # bytes per read from ffmpeg's audio pipe


class _Ffmpeg:
    """One ffmpeg process with its stderr in a temporary file; `close()` kills it if it still runs.

    It runs in its own session, so Ctrl-C reaches Python (which cleans up) and not ffmpeg.
    """

    def __init__(self, args: list[str], stdin=None, stdout=None):
        self.errors = tempfile.TemporaryFile()
        command = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", *args]
        try:
            self.proc = subprocess.Popen(
                command, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=stdout,
                stderr=self.errors, start_new_session=True,
            )
        except OSError:
            self.errors.close()
            raise

    def wait(self) -> int:
        return self.proc.wait()

    def finish(self) -> tuple[int, str]:
        """Wait for ffmpeg: (exit status, its last error line)."""
        return self.proc.wait(), self.reason()

    def reason(self) -> str:
        """ffmpeg's last error line."""
        self.errors.seek(0)
        return last_line(self.errors.read().decode(errors="replace"))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:  # a broken pipe's buffered bytes cannot be flushed any more
                    pass
        self.proc.wait()
        self.errors.close()


@functools.lru_cache(maxsize=1)
def _has_soxr() -> bool:
    try:
        report = subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--enable-libsoxr" in report.stdout


def read_audio(path: str | os.PathLike, sample_rate: int | None = None, mono: bool = False) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file ffmpeg reads (wav, mp3, m4a, ogg, opus, flac, mp4, mov, webm...).

    Returns (samples, rate): float32 samples shaped (n, channels), at the file's own rate unless
    `sample_rate` asks ffmpeg to resample (soxr, high quality). `mono=True` averages the
    channels while decoding, giving (n, 1) and a fraction of the memory: an hour of 48 kHz
    stereo is 1.4 GB as stereo, 0.7 GB as mono, 0.23 GB as 16 kHz mono.
    InputError when the file has no audio track, or it is empty, corrupt or unsupported.
    """
    if sample_rate is not None and (int(sample_rate) != sample_rate or sample_rate <= 0):
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
    info = probe(path)
    if not info.has_audio:
        raise InputError(f"{path}: has no audio track; give a speech file or a video with sound")
    channels = info.channels or 2  # a layout ffmpeg names but we do not: let ffmpeg mix it to stereo
    rate = int(sample_rate or info.sample_rate or 48000)
    resampler = ["-af", "aresample=resampler=soxr"] if _has_soxr() else []
    args = ["-i", file_url(path), "-map", "0:a:0", "-vn", "-sn", "-dn", *resampler, "-ac", str(channels), "-ar", str(rate),
            "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    frame_bytes = 4 * channels
    chunk = max(1, _CHUNK // frame_bytes) * frame_bytes
    samples = bytearray()
    run = _Ffmpeg(args, stdout=subprocess.PIPE)
    try:
        leftover = b""
        while True:
            data = run.proc.stdout.read(chunk)
            if not data:
                break
            if leftover:
                data, leftover = leftover + data, b""
            usable = len(data) - len(data) % frame_bytes
            if usable < len(data):
                data, leftover = data[:usable], data[usable:]
            if mono and channels > 1:
                data = np.frombuffer(data, np.float32).reshape(-1, channels).mean(axis=1, dtype=np.float32).tobytes()
            samples += data
        status, reason = run.finish()
    finally:
        run.close()
    if status != 0:
        raise InputError(f"{path}: the audio cannot be decoded ({reason}); is the file complete and not corrupt?")
    if not samples:
        raise InputError(f"{path}: the audio track is empty; give a recording with sound in it")
    out_channels = 1 if mono else channels
    return np.frombuffer(samples, np.float32).reshape(-1, out_channels), rate


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
    run = _Ffmpeg(args, stdout=subprocess.PIPE)
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


def folder_writable(folder: str | os.PathLike) -> bool:
    """Whether a file can be created in `folder`, found by creating (and removing) one: the permission
    bits `os.access` reads say yes to root almost everywhere, also where creating a file fails."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".pcavs-", suffix=".probe"):
            return True
    except OSError:
        return False


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
        self.tmp = folder / f".{self.out.name}.{secrets.token_hex(4)}.part"
        self._run: _Ffmpeg | None = None

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
            "-f", container, "-y", file_url(self.tmp),
        ]

    def __enter__(self) -> "VideoWriter":
        try:  # claim the hidden name (and learn early whether the folder takes new files)
            os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except OSError as exc:
            raise InputError(f"{self.tmp.parent}: cannot create files in the output folder ({exc.strerror}); "
                             "choose another output path") from None
        try:
            self._run = _Ffmpeg(self._command(), stdin=subprocess.PIPE)
        except BaseException as exc:
            self.tmp.unlink(missing_ok=True)
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
            self.tmp.unlink(missing_ok=True)

    def _finish(self) -> None:
        if self.frames == 0:
            raise PcavsError(f"{self.out}: no frames were written, so no video was made")
        try:
            self._run.proc.stdin.close()
        except OSError:
            pass
        if self._run.wait() != 0:
            raise PcavsError(f"{self.out}: writing the video failed ({self._run.reason()}); check the free disk space and try again")
        try:
            os.replace(self.tmp, self.out)
        except OSError as exc:
            raise PcavsError(f"{self.out}: the finished video could not be moved into place ({exc.strerror})") from None
