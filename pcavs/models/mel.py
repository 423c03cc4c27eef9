"""The audio encoder's input: 16 kHz speech -> normalized mel spectrogram -> one window per video frame.

Reproduces the reference's `lws`-based magnitude STFT without the `lws` package (spec §2).
"""
from __future__ import annotations

import functools

import numpy as np

from ..core.facts import FPS, SAMPLE_RATE, SAMPLES_PER_FRAME

TARGET_RMS = 0.1
MIN_RMS = 1e-4
N_FFT = 1280  # frame length and FFT size
HOP = 160  # 10 ms
N_MELS = 80
FMIN, FMAX = 125.0, 7600.0
MEL_PER_FRAME = SAMPLE_RATE // FPS // HOP  # 4 mel rows per video frame
WINDOW_ROWS = 20  # mel rows seen by the audio encoder for one video frame
WINDOW_OFFSET = 2  # frame f reads rows [(f - 2) * 4, (f - 2) * 4 + 20)
FRONT = N_FFT - HOP  # zeros before the signal: STFT frame r covers samples [r * HOP - FRONT, r * HOP + HOP)
BLOCK_HOP = MEL_PER_FRAME * HOP  # samples per block of rows (one video frame)
BLOCK_SAMPLES = FRONT + BLOCK_HOP  # the samples one block of rows covers
RUNNING_MIN_RMS = 0.01  # loudness="running": the RMS below which audio is not amplified further (at most 10x)


def whole_gain(samples: np.ndarray) -> np.float32:
    """The gain that brings a whole recording to RMS 0.1 (the RMS is floored at 1e-4, so silence stays silent)."""
    energy = 0.0
    for start in range(0, samples.size, 1 << 20):  # float64 sums a block at a time: no float64 copy of hours of audio
        block = samples[start : start + (1 << 20)].astype(np.float64)
        energy += float(np.dot(block, block))
    rms = np.sqrt(energy / samples.size) if samples.size else 0.0
    return np.float32(TARGET_RMS / max(rms, MIN_RMS))


def normalize_rms(samples: np.ndarray) -> np.ndarray:
    """Scale so the RMS is 0.1 (the reference's loudness="whole")."""
    return np.multiply(samples, whole_gain(samples), dtype=np.float32)


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


def _block_rows(segment: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Mel rows of one block: `segment` holds the BLOCK_SAMPLES raw float32 samples the block's rows cover
    (zeros outside the signal), `gains` one float32 gain per row. Always one shape, so a row's value never
    depends on how the signal was cut (lws's STFT frame r covers samples [r * HOP - FRONT, r * HOP + HOP))."""
    frames = np.lib.stride_tricks.sliding_window_view(segment, N_FFT)[::HOP]
    scaled = np.multiply(frames, gains[:, None], dtype=np.float32).astype(np.float64)
    magnitude = np.abs(np.fft.rfft(scaled * _analysis_window(), axis=1))
    db = 20.0 * np.log10(np.maximum(1e-5, magnitude @ _mel_basis().T)) - 20.0
    return np.clip((db + 100.0) / 100.0, 0.0, 1.0).astype(np.float32)


class MelStream:
    """The mel spectrogram of a signal that arrives in pieces: `feed` samples as they come, `finish` at the end.

    Rows are made MEL_PER_FRAME at a time (one video frame's hop), each block as soon as its last
    sample is in, and each row's value is the same however the signal was cut into pieces.
    `gain` scales the samples: a number (the whole clip's gain, see `normalize_rms`), or None for
    the running rule: row r is scaled by 0.1 / max(RMS of samples [0, r * HOP + HOP), RUNNING_MIN_RMS),
    the loudness of all the audio up to the end of the row's own STFT frame, floored so that
    leading silence is not amplified to the level of speech.
    """

    def __init__(self, gain: float | None = None):
        self.gain = None if gain is None else np.float32(gain)
        self.samples = 0  # fed so far
        self.rows = 0  # mel rows made so far
        self.finished = False
        self._mel = np.zeros((1024, N_MELS), np.float32)  # grows by doubling; rows [0, self.rows) are made
        self._tail = np.zeros(FRONT, np.float32)  # samples [next block's start - FRONT, self.samples)
        self._energy = 0.0  # running rule: sum of squares of the samples before the next block's hops

    @property
    def mel(self) -> np.ndarray:
        """The rows made so far, (rows, 80) float32 in [0, 1]."""
        return self._mel[: self.rows]

    def feed(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).ravel()
        self.samples += samples.size
        self._tail = np.concatenate([self._tail, samples])
        done = 0
        while len(self._tail) - done >= BLOCK_SAMPLES:
            self._block(self._tail[done : done + BLOCK_SAMPLES])
            done += BLOCK_HOP
        self._tail = self._tail[done:].copy()

    def finish(self) -> None:
        """The signal has ended: the last rows, over the zeros after it (as lws pads)."""
        if self.finished:
            return
        self.finished = True
        total = -(-(FRONT + self.samples) // HOP)
        while self.rows < total:
            block = np.zeros(BLOCK_SAMPLES, np.float32)
            block[: min(len(self._tail), BLOCK_SAMPLES)] = self._tail[:BLOCK_SAMPLES]
            self._block(block)
            self._tail = self._tail[BLOCK_HOP:]
        self.rows = total

    def _block(self, segment: np.ndarray) -> None:
        first = self.rows * HOP  # the block's first row's hop starts at this sample
        if self.gain is not None:
            gains = np.full(MEL_PER_FRAME, self.gain, np.float32)
        else:
            hops = segment[FRONT:].astype(np.float64).reshape(MEL_PER_FRAME, HOP)
            gains = np.empty(MEL_PER_FRAME, np.float32)
            for k, energy in enumerate((hops * hops).sum(axis=1)):
                self._energy += float(energy)
                count = max(1, min(self.samples, first + (k + 1) * HOP))
                gains[k] = TARGET_RMS / max(np.sqrt(self._energy / count), RUNNING_MIN_RMS)
        if self.rows + MEL_PER_FRAME > len(self._mel):
            self._mel = np.concatenate([self._mel, np.zeros_like(self._mel)])
        self._mel[self.rows : self.rows + MEL_PER_FRAME] = _block_rows(segment, gains)
        self.rows += MEL_PER_FRAME


def mel_spectrogram(samples: np.ndarray) -> np.ndarray:
    """Normalized mel spectrogram of RMS-normalized 16 kHz samples: (rows, 80) float32 in [0, 1]."""
    return mel_of(samples, gain=1.0)


def mel_of(samples: np.ndarray, gain: float | None) -> np.ndarray:
    """The mel spectrogram of a whole signal, as `MelStream` makes it with `gain` (None: the running rule)."""
    stream = MelStream(gain)
    stream.feed(samples)
    stream.finish()
    return stream.mel


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
