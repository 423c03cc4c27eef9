"""Media through ffmpeg pipes: decode any audio track, decode video frames at 25 fps, write the mp4.

Every subprocess gets an argument list (never a shell string), and nothing is held whole:
audio is read in chunks, frames one at a time, and the writer streams frames as they come.
"""
from __future__ import annotations

import os
import secrets
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from .errors import InputError, PcavsError
from .ffmpeg import last_line, ffmpeg_exe, probe

FPS = 25
_CHUNK = 1 << 20


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any file ffmpeg reads to float32 mono at its native rate.

    Channels are averaged while decoding (in chunks, so hours of audio stay small).
    Returns (samples, sample_rate).
    """
    info = probe(path)
    if not info.has_audio:
        what = "video has no audio track" if info.has_video else "file has no audio"
        raise InputError(f"{path}: the {what}; give a speech file or a video with sound")
    channels = info.channels or 1
    rate = info.sample_rate or 48000
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:a:0", "-vn",
        "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels), "-ar", str(rate), "pipe:1",
    ]
    chunks, leftover = [], b""
    frame_bytes = 4 * channels
    with tempfile.TemporaryFile() as errors, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as proc:
        while True:
            data = proc.stdout.read(_CHUNK)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % frame_bytes
            leftover = data[usable:]
            chunks.append(np.frombuffer(data[:usable], np.float32).reshape(-1, channels).mean(axis=1))
        status = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace")
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if status != 0 and samples.size == 0:
        raise InputError(f"{path}: the audio cannot be decoded ({last_line(message)}); is the file complete?")
    return samples.astype(np.float32, copy=False), rate


def iter_frames(path: str | os.PathLike, fps: float = FPS) -> Iterator[np.ndarray]:
    """RGB uint8 frames resampled to `fps` by presentation time, rotation metadata applied, streamed."""
    info = probe(path)
    if not info.has_video or not info.width or not info.height:
        raise InputError(f"{path}: has no video stream; give a video, a folder of frames or an image as the pose")
    command = [
        ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path), "-map", "0:v:0", "-an",
        "-vf", f"fps={fps}", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1",
    ]
    size = info.width * info.height * 3
    count = 0
    with tempfile.TemporaryFile() as errors, subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors) as proc:
        try:
            while True:
                data = proc.stdout.read(size)
                if len(data) < size:
                    break
                count += 1
                yield np.frombuffer(data, np.uint8).reshape(info.height, info.width, 3)
        finally:
            proc.kill()
        status = proc.wait()
        errors.seek(0)
        message = errors.read().decode(errors="replace")
    if count == 0:
        raise InputError(f"{path}: no video frames could be decoded ({last_line(message) if status else 'empty video'})")


class VideoWriter:
    """Pipe RGB frames into an H.264 + AAC mp4; the file appears at `out` only when complete.

    Frames go to a hidden temporary file beside `out`, renamed over it on success; any
    exception (Ctrl-C included) kills ffmpeg and removes the temporary file.
    """

    def __init__(self, out: str | os.PathLike, width: int, height: int, audio: str | os.PathLike | None = None, fps: int = FPS):
        if width % 2 or height % 2:
            raise ValueError(f"H.264 with yuv420p needs even sizes, got {width}x{height}")
        self.out = Path(out)
        folder = self.out.resolve().parent
        if not folder.is_dir():
            raise InputError(f"{self.out}: folder {folder} does not exist; create it or choose another path")
        self.tmp = folder / f".{self.out.stem}.{secrets.token_hex(4)}.part{self.out.suffix or '.mp4'}"
        self.size = (height, width, 3)
        inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", str(fps), "-i", "pipe:0"]
        maps = ["-map", "0:v:0"]
        if audio is not None:
            inputs += ["-i", str(audio)]
            maps += ["-map", "1:a:0", "-c:a", "aac", "-b:a", "160k"]
        self.command = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs, *maps,
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-r", str(fps),
            "-movflags", "+faststart", "-f", "mov" if self.out.suffix.lower() == ".mov" else "mp4", str(self.tmp),
        ]
        self.proc: subprocess.Popen | None = None
        self.errors = None

    def __enter__(self) -> "VideoWriter":
        try:
            self.errors = tempfile.TemporaryFile()
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stderr=self.errors)
        except OSError as exc:
            self._cleanup()
            raise PcavsError(f"{self.out}: cannot start ffmpeg ({exc})") from None
        return self

    def write(self, frame: np.ndarray) -> None:
        """Append one RGB uint8 frame of the writer's size."""
        if frame.shape != self.size or frame.dtype != np.uint8:
            raise ValueError(f"frame is {frame.shape} {frame.dtype}, the video needs {self.size} uint8")
        try:
            self.proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, OSError):
            raise PcavsError(f"{self.out}: writing the video failed ({self._reason()})") from None

    def _reason(self) -> str:
        self.proc.kill()
        self.proc.wait()
        self.errors.seek(0)
        return last_line(self.errors.read().decode(errors="replace"))

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.proc.kill()
                self.proc.wait()
                return
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if self.proc.wait() != 0:
                raise PcavsError(f"{self.out}: ffmpeg failed writing the video ({self._reason()})")
            os.replace(self.tmp, self.out)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        if self.errors is not None:
            self.errors.close()
        self.tmp.unlink(missing_ok=True)
