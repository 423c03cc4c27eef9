"""SyncNet's audio features: 13 MFCCs every 10 ms, in float64, as python_speech_features 0.6's `mfcc()`
computes them with its defaults (the official scorer calls it on the int16 samples as they are).

Pre-emphasis 0.97 (first sample kept); 400-sample frames every 160 samples, the last zero-padded,
no window; power spectrum |rfft(frame, 512)|^2 / 512; 26 triangular mel filters from 0 to 8 kHz
whose edges sit on FFT bins; log (zeros become eps); orthonormal DCT-II, 13 kept; sinusoidal
lifter 22; coefficient 0 replaced by the log of the frame's energy.
"""
from __future__ import annotations

import math

import numpy as np

from ..core.facts import SAMPLE_RATE

FRAME = 400  # 25 ms
STEP = 160  # 10 ms
NFFT = 512
FILTERS = 26
COEFFICIENTS = 13
LIFTER = 22
PREEMPHASIS = 0.97
EPS = np.finfo(np.float64).eps


def hz_to_mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz, np.float64) / 700.0)


def mel_to_hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel, np.float64) / 2595.0) - 1.0)


def filterbank() -> np.ndarray:
    """(26, 257) triangular filters; edges on FFT bins floor((NFFT + 1) * hz / rate) of mel-spaced points."""
    mels = np.linspace(hz_to_mel(0.0), hz_to_mel(SAMPLE_RATE / 2), FILTERS + 2)
    edges = np.floor((NFFT + 1) * mel_to_hz(mels) / SAMPLE_RATE)
    bank = np.zeros((FILTERS, NFFT // 2 + 1))
    for j in range(FILTERS):
        low, centre, high = edges[j], edges[j + 1], edges[j + 2]
        for i in range(int(low), int(centre)):
            bank[j, i] = (i - low) / (centre - low)
        for i in range(int(centre), int(high)):
            bank[j, i] = (high - i) / (high - centre)
    return bank


def dct_matrix(size: int = FILTERS, keep: int = COEFFICIENTS) -> np.ndarray:
    """(size, keep): x @ M is the orthonormal DCT-II of x's last axis, first `keep` coefficients."""
    n = np.arange(size)
    k = np.arange(keep)
    matrix = np.cos(np.pi * np.outer(2 * n + 1, k) / (2 * size)) * math.sqrt(2.0 / size)
    matrix[:, 0] = math.sqrt(1.0 / size)
    return matrix


def num_steps(num_samples: int) -> int:
    """MFCC columns for a signal: 1 + ceil((S - 400) / 160), at least 1."""
    if num_samples <= FRAME:
        return 1
    return 1 + math.ceil((num_samples - FRAME) / STEP)


def mfcc(samples: np.ndarray) -> np.ndarray:
    """(13, T) float64 MFCCs (coefficient x 10 ms step) of 1-d 16 kHz samples, on their own scale (int16 as they are)."""
    signal = np.asarray(samples)
    if signal.ndim != 1:
        raise ValueError(f"mfcc needs 1-d samples, got shape {signal.shape}")
    signal = signal.astype(np.float64)
    emphasised = np.concatenate([signal[:1], signal[1:] - PREEMPHASIS * signal[:-1]])
    steps = num_steps(len(emphasised))
    padded = np.zeros((steps - 1) * STEP + FRAME)
    padded[: len(emphasised)] = emphasised
    frames = np.lib.stride_tricks.sliding_window_view(padded, FRAME)[::STEP][:steps]
    power = np.abs(np.fft.rfft(frames, NFFT)) ** 2 / NFFT
    energy = power.sum(axis=1)
    energy[energy == 0] = EPS
    banded = power @ filterbank().T
    banded[banded == 0] = EPS
    cepstra = np.log(banded) @ dct_matrix()
    cepstra *= 1.0 + (LIFTER / 2.0) * np.sin(np.pi * np.arange(COEFFICIENTS) / LIFTER)
    cepstra[:, 0] = np.log(energy)
    return cepstra.T
