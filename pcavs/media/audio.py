"""Audio in: the first audio track of any file ffmpeg reads, decoded through a pipe in chunks
(mono averaged chunk by chunk, so nothing is held twice), and speech as the models hear it."""
from __future__ import annotations

import os
import subprocess

import numpy as np

from ..core.errors import InputError
from ..core.facts import SAMPLE_RATE, SAMPLES_PER_FRAME
from .ffmpeg import Ffmpeg, file_url, has_soxr
from .probe import probe

SPEECH_RATE = SAMPLE_RATE  # the name tests/app/test_notebook_media.py imports
MIN_SPEECH = SAMPLES_PER_FRAME  # samples: one video frame (40 ms) at the least
_CHUNK = 1 << 20  # bytes per read from ffmpeg's audio pipe


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
    resampler = ["-af", "aresample=resampler=soxr"] if has_soxr() else []
    args = ["-i", file_url(path), "-map", "0:a:0", "-vn", "-sn", "-dn", *resampler, "-ac", str(channels), "-ar", str(rate),
            "-c:a", "pcm_f32le", "-f", "f32le", "pipe:1"]
    frame_bytes = 4 * channels
    chunk = max(1, _CHUNK // frame_bytes) * frame_bytes
    samples = bytearray()
    run = Ffmpeg(args, stdout=subprocess.PIPE)
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


def load_speech(path: str | os.PathLike) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to float32 mono at 16 kHz.

    ffmpeg averages the channels and resamples with soxr (the same filter as librosa's
    soxr_hq) while streaming, so an hour of audio takes 230 MB. NaN samples become
    silence; audio shorter than one video frame (40 ms) is refused.
    """
    samples, _ = read_audio(path, sample_rate=SAMPLE_RATE, mono=True)
    samples = samples[:, 0]
    if len(samples) < MIN_SPEECH:
        raise InputError(f"{path}: the audio is too short ({1000 * len(samples) / SAMPLE_RATE:.0f} ms); "
                         "give at least 40 ms of speech")
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=1.0, neginf=-1.0)
    return samples
