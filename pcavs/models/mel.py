"""The audio encoder's input: 16 kHz speech -> normalized mel spectrogram -> one window per video frame.

Reproduces the reference's `lws`-based magnitude STFT without the `lws` package (spec §2).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from ..media.audio import SPEECH_RATE as SAMPLE_RATE, load_speech
from ..media.video import FPS

TARGET_RMS = 0.1
MIN_RMS = 1e-4
N_FFT = 1280  # frame length and FFT size
HOP = 160  # 10 ms
N_MELS = 80
FMIN, FMAX = 125.0, 7600.0
MEL_PER_FRAME = SAMPLE_RATE // FPS // HOP  # 4 mel rows per video frame
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
WINDOW_ROWS = 20  # mel rows seen by the audio encoder for one video frame
WINDOW_OFFSET = 2  # frame f reads rows [(f - 2) * 4, (f - 2) * 4 + 20)
STFT_BLOCK = 4096  # spectrogram rows computed at a time: memory stays flat for hours of audio


def normalize_rms(samples: np.ndarray) -> np.ndarray:
    """Scale so the RMS is 0.1 (the RMS is floored at 1e-4, so silence stays silent)."""
    energy = 0.0
    for start in range(0, samples.size, 1 << 20):  # float64 sums a block at a time: no float64 copy of hours of audio
        block = samples[start : start + (1 << 20)].astype(np.float64)
        energy += float(np.dot(block, block))
    rms = np.sqrt(energy / samples.size) if samples.size else 0.0
    return np.multiply(samples, np.float32(TARGET_RMS / max(rms, MIN_RMS)), dtype=np.float32)


def num_frames(num_samples: int) -> int:
    """Video frames for a signal: one per 40 ms, rounded up, so all of the audio is shown."""
    return -(-num_samples // SAMPLES_PER_FRAME)


@functools.lru_cache(maxsize=1)
def _analysis_window() -> np.ndarray:
    """lws's 'speech'-mode analysis window for hop 160: sqrt(h * s(h)), h = sqrt(symmetric Hann)."""
    i = np.arange(N_FFT)
    hann = 0.5 * (1.0 - np.cos(2.0 * np.pi * (2 * i + 1) / (2 * N_FFT)))
    h = np.sqrt(hann)
    overlap = (h**2).reshape(-1, HOP).sum(axis=0)  # sum of h^2 over all shifts by the hop
    synthesis = h / np.tile(overlap, N_FFT // HOP)
    return np.sqrt(h * synthesis)


@functools.lru_cache(maxsize=1)
def _mel_basis() -> np.ndarray:
    import librosa

    return librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)


def stft_magnitude(samples: np.ndarray, rows: slice | None = None) -> np.ndarray:
    """|STFT| as lws computes it: (frames, N_FFT // 2 + 1), float64; `rows` picks a range of frames."""
    front = N_FFT - HOP
    total = -(-(front + len(samples)) // HOP)
    first, stop, _ = (rows or slice(None)).indices(total)
    # frame r covers padded[r * HOP : r * HOP + N_FFT], where padded = front zeros + samples + zeros
    start = first * HOP - front
    length = (stop - first - 1) * HOP + N_FFT if stop > first else 0
    segment = np.zeros(max(length, 0), dtype=np.float64)
    lo, hi = max(start, 0), min(start + length, len(samples))
    if hi > lo:
        segment[lo - start : hi - start] = samples[lo:hi]
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP] if length else np.zeros((0, N_FFT))
    return np.abs(np.fft.rfft(frames * _analysis_window(), axis=1))


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Normalized mel spectrogram of RMS-normalized 16 kHz samples: (rows, 80) float32 in [0, 1].

    Computed STFT_BLOCK rows at a time, so long audio needs no more than its own size in memory.
    """
    total = -(-(N_FFT - HOP + len(samples)) // HOP)
    mel = np.empty((total, N_MELS), dtype=np.float32)
    basis = _mel_basis().T
    for first in range(0, total, STFT_BLOCK):
        rows = slice(first, min(total, first + STFT_BLOCK))
        db = 20.0 * np.log10(np.maximum(1e-5, stft_magnitude(samples, rows) @ basis)) - 20.0
        mel[rows] = np.clip((db + 100.0) / 100.0, 0.0, 1.0)
    return mel


def frame_windows(mel: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Audio-encoder inputs for video frames `frames`: (len(frames), 1, 80, 20) float32.

    Frame f reads mel rows [(f - 2) * 4, (f - 2) * 4 + 20); rows outside the spectrogram
    are zeros, the normalized-silence value the reference uses.
    """
    start = (np.asarray(frames) - WINDOW_OFFSET) * MEL_PER_FRAME
    rows = start[:, None] + np.arange(WINDOW_ROWS)[None, :]
    valid = (rows >= 0) & (rows < len(mel))
    windows = np.where(valid[..., None], mel[np.clip(rows, 0, len(mel) - 1)], 0.0)
    return np.ascontiguousarray(windows.transpose(0, 2, 1)[:, None], dtype=np.float32)


def speech_features(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """A speech file -> (normalized mel spectrogram, number of video frames); the samples are not kept."""
    samples = normalize_rms(load_speech(path))
    return mel_spectrogram(samples), num_frames(len(samples))
