"""Audio front-end: any speech file -> 16 kHz mono -> normalized mel spectrogram -> per-frame windows.

Reproduces the reference's `lws`-based magnitude STFT without the `lws` package (spec §2).
"""
from __future__ import annotations

import functools
import os

import numpy as np

SAMPLE_RATE = 16000
TARGET_RMS = 0.1
MIN_RMS = 1e-4
N_FFT = 1280  # frame length and FFT size
HOP = 160  # 10 ms
N_MELS = 80
FMIN, FMAX = 125.0, 7600.0
FPS = 25
MEL_PER_FRAME = SAMPLE_RATE // FPS // HOP  # 4 mel rows per video frame
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640
WINDOW_ROWS = 20  # mel rows seen by the audio encoder for one video frame
WINDOW_OFFSET = 2  # frame f reads rows [(f - 2) * 4, (f - 2) * 4 + 20)
RESAMPLER = "soxr_hq"  # one resampler for every input path


def load_audio(path: str | os.PathLike) -> np.ndarray:
    """Decode any audio (or the audio track of a video) to float32 mono at 16 kHz.

    Channels are averaged; other rates are resampled with soxr (high quality). NaN samples
    become silence; audio shorter than one video frame (40 ms) is refused.
    """
    from .errors import InputError
    from .video import read_audio

    samples, rate = read_audio(path)
    if len(samples) < rate // FPS:
        raise InputError(f"{path}: the audio is too short ({1000 * len(samples) / rate:.0f} ms); give at least 40 ms of speech")
    mono = np.nan_to_num(samples.astype(np.float32), nan=0.0, posinf=1.0, neginf=-1.0)
    return resample(mono, rate)


def resample(samples: np.ndarray, rate: int) -> np.ndarray:
    """Resample float32 mono samples from `rate` to 16 kHz."""
    if rate == SAMPLE_RATE:
        return np.ascontiguousarray(samples, dtype=np.float32)
    import librosa

    return librosa.resample(samples, orig_sr=rate, target_sr=SAMPLE_RATE, res_type=RESAMPLER).astype(np.float32)


def normalize_rms(samples: np.ndarray) -> np.ndarray:
    """Scale so the RMS is 0.1 (the RMS is floored at 1e-4, so silence stays silent)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if samples.size else 0.0
    return (samples * (TARGET_RMS / max(rms, MIN_RMS))).astype(np.float32)


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


def stft_magnitude(samples: np.ndarray) -> np.ndarray:
    """|STFT| as lws computes it: (frames, N_FFT // 2 + 1), float64."""
    front = N_FFT - HOP
    rows = -(-(front + len(samples)) // HOP)
    padded = np.zeros((rows - 1) * HOP + N_FFT, dtype=np.float64)
    padded[front : front + len(samples)] = samples
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    return np.abs(np.fft.rfft(frames * _analysis_window(), axis=1))


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Normalized mel spectrogram of RMS-normalized 16 kHz samples: (rows, 80) float32 in [0, 1]."""
    mel = stft_magnitude(samples) @ _mel_basis().T
    db = 20.0 * np.log10(np.maximum(1e-5, mel)) - 20.0
    return np.clip((db + 100.0) / 100.0, 0.0, 1.0).astype(np.float32)


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
