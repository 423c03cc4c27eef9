"""The server's defaults, and what one request to it may ask for: the length of its media, its options, its time, and how many
places in the queue one client holds. Every bound is checked before the work starts and is a one-line error.

The voice is decoded here, once, to a 16 kHz wav in the request's folder, with ffmpeg told to stop just
past the limit: a file whose header lies about its length still costs no more than `max_seconds`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.errors import InputError, renamed
from ..core.facts import SAMPLE_RATE
from ..core.options import Options

HOST = "127.0.0.1"
PORT = 7860
QUEUE = 16  # requests waiting at most (the whole server's)
MAX_FILE_SIZE = "100mb"
MAX_SECONDS = 300.0  # of voice or head motion per request
JOB_TIMEOUT = 1800.0  # s a job may run
PER_CLIENT = 2  # places in the queue (waiting or running) one client holds at most
MAX_BATCH = {"cpu": 16, "cuda": 64}  # the largest batch_size a request may ask for, per device type
LIVE_RATES = (8000, 48000)  # Hz a live microphone may send
LIVE_CHUNK = 1.0  # s of audio in one live chunk at most


@dataclass(frozen=True)
class Limits:
    """The bounds of one server (`pcavs serve` flags)."""

    max_seconds: float = MAX_SECONDS
    job_timeout: float = JOB_TIMEOUT
    per_client: int = PER_CLIENT
    allow_enhance: bool = True

    def __post_init__(self) -> None:
        for name in ("max_seconds", "job_timeout"):
            if not getattr(self, name) > 0:
                raise InputError(f"{name.replace('_', '-')}: {getattr(self, name)!r} must be a positive number of seconds")
        if self.per_client < 1:
            raise InputError(f"per-client: {self.per_client} must be 1 or more (places in the queue per client)")

    def options(self, options: Options, device_type: str) -> Options:
        """`options` if a request may ask for them (one-line error if not), with progress bars off."""
        largest = MAX_BATCH.get(device_type, MAX_BATCH["cpu"])
        if options.batch_size is not None and not 1 <= options.batch_size <= largest:
            raise InputError(f"batch_size: {options.batch_size} is outside 1-{largest}, the most this server allows; "
                             "leave it empty for the default")
        if options.enhance and not self.allow_enhance:
            raise InputError("enhance: this server does not restore faces (started with --no-enhance); leave it off")
        if options.mouth is not None or options.enhance_checkpoint is not None:
            raise InputError("mouth and enhance_checkpoint name files on the server; a request cannot set them")
        if options.return_frames or options.return_faces:
            raise InputError("return_frames and return_faces are for Python calls; the server returns the mp4")
        return replace(options, progress=False)

    def voice(self, path: str | os.PathLike, shown: str, folder: Path) -> Path:
        """The voice as a 16 kHz mono wav in `folder`, refused (one line naming `shown`) when it is longer than
        `max_seconds`: by its header first, then by what decoding finds."""
        from ..media.audio import load_speech
        from ..media.ffmpeg import WHOLE, file_url, run

        self._length(path, shown, "voice")
        out = folder / "voice.wav"
        args = ["-i", file_url(path), "-map", "0:a:0", "-vn", "-t", f"{self.max_seconds + 0.5:.3f}",
                "-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-y", str(out)]
        done = run(args, WHOLE)
        if done.returncode != 0 or not out.is_file():
            raise InputError(f"{shown}: the audio cannot be decoded; is the file complete and a recording?")
        seconds = len(load_speech(out)) / SAMPLE_RATE
        if seconds > self.max_seconds:
            out.unlink()
            raise InputError(f"{shown}: holds more than {self.max_seconds:g} s of audio (its header said less), "
                             f"the most this server takes; send a shorter recording")
        return out

    def pose(self, path: str | os.PathLike, shown: str) -> None:
        """Refuse a head-motion video longer than `max_seconds` (the job reads at most the voice's length of it)."""
        self._length(path, shown, "head-motion video")

    def _length(self, path: str | os.PathLike, shown: str, what: str) -> None:
        from ..media.probe import probe

        try:
            info = probe(path)
        except InputError as exc:
            raise InputError(renamed(str(exc), {str(path): shown})) from None
        if info.duration is not None and info.duration > self.max_seconds:
            raise InputError(f"{shown}: the {what} is {info.duration:.0f} s long; this server takes at most "
                             f"{self.max_seconds:g} s: send a shorter one")

    @staticmethod
    def live_chunk(rate: int, samples: int) -> None:
        """A live microphone's chunk: 8-48 kHz, at most a second."""
        low, high = LIVE_RATES
        if not low <= rate <= high:
            raise InputError(f"microphone: {rate} Hz is outside {low}-{high} Hz; send 8-48 kHz audio")
        if samples > LIVE_CHUNK * rate:
            raise InputError(f"microphone: a chunk of {samples / rate:.1f} s; send chunks of at most {LIVE_CHUNK:g} s")
