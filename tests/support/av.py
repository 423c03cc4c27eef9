"""Audio and video made at test time with the real ffmpeg, and ways to read back what a file holds.

Signals are speech-like but never periodic (a wandering pitch under a syllable envelope), so a
cross-correlation finds one clear lag. Videos carry their frame number drawn as big black and
white cells, which survives H.264, VP9 and GIF; a red/blue band on top shows which way is up.
"""
from __future__ import annotations

import math
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np

from pcavs.media.ffmpeg import ffmpeg_exe

BITS = 10  # frame numbers up to 1023
GRID = (2, 5)  # rows x columns of bit cells


def ffmpeg(*args: str, stdin: bytes | None = None) -> None:
    """Run the pcavs ffmpeg with these arguments (quiet, overwriting); raise if it fails."""
    done = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                          input=stdin, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed: {done.stderr.decode(errors='replace')}")


# ---------------------------------------------------------------- audio

def speech_like(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """float32 (n, channels) in [-0.5, 0.5]: harmonics of a gliding pitch, syllable bursts, a little breath noise.

    Each channel has its own pitch track and rhythm, so swapped or mixed channels show.
    Harmonics stop below 45 % of `rate`, so any rate from 8 kHz up holds the signal unaliased.
    """
    n = round(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros((n, channels), np.float32)
    for channel in range(channels):
        rng = np.random.default_rng(seed * 101 + channel)
        wander = np.cumsum(rng.normal(0, 1, n)) / math.sqrt(rate)  # slow random drift of the pitch
        pitch = 120 + 40 * channel + 25 * np.sin(2 * math.pi * 0.7 * t + channel) + 30 * np.tanh(wander)
        phase = 2 * math.pi * np.cumsum(pitch) / rate
        voice = np.zeros(n)
        for harmonic in range(1, 40):
            if harmonic * 260 >= 0.45 * rate:
                break
            formant = np.exp(-((harmonic * 150 - 700) / 900) ** 2) + 0.3
            voice += formant * np.sin(harmonic * phase) / harmonic
        syllables = np.clip(np.sin(2 * math.pi * (3.1 + channel * 0.8) * t + rng.uniform(0, 6)), 0, None) ** 0.6
        breath = rng.normal(0, 0.02, n)
        signal = syllables * voice + breath
        out[:, channel] = 0.45 * signal / np.abs(signal).max()
    return out


def write_wav(path: Path, samples: np.ndarray, rate: int, codec: str = "pcm_s16le") -> Path:
    """samples (n, channels) float32 -> a wav file (16-bit unless `codec` says otherwise)."""
    samples = np.ascontiguousarray(samples, np.float32)
    ffmpeg("-f", "f32le", "-ar", str(rate), "-ac", str(samples.shape[1]), "-i", "pipe:0", "-c:a", codec, str(path),
           stdin=samples.tobytes())
    return path


# codec arguments for each audio container, as a phone or an editor would write them
AUDIO_FORMATS = {
    "wav": ("-c:a", "pcm_s16le"),
    "flac": ("-c:a", "flac"),
    "mp3": ("-c:a", "libmp3lame", "-b:a", "192k"),
    "m4a": ("-c:a", "aac", "-b:a", "192k"),
    "ogg": ("-c:a", "libvorbis", "-q:a", "6"),
    "opus": ("-c:a", "libopus", "-b:a", "128k"),
}


def encode_audio(source: Path, path: Path, *extra: str) -> Path:
    """Re-encode `source` into the container named by `path`'s suffix (see AUDIO_FORMATS)."""
    ffmpeg("-i", str(source), *AUDIO_FORMATS[path.suffix.lstrip(".")], *extra, str(path))
    return path


def best_lag(signal: np.ndarray, reference: np.ndarray, rate: int, max_ms: float = 80) -> int:
    """Samples by which `signal` lags `reference` (positive: it starts late), searched within ±max_ms."""
    span = int(rate * max_ms / 1000)
    n = min(len(signal), len(reference), rate)  # the first second is plenty
    a, b = signal[:n].astype(np.float64), reference[:n].astype(np.float64)
    size = 1 << math.ceil(math.log2(2 * n))
    corr = np.fft.irfft(np.fft.rfft(a, size) * np.conj(np.fft.rfft(b, size)), size)
    lags = np.r_[np.arange(0, span + 1), np.arange(-span, 0)]
    return int(lags[np.argmax(corr[lags])])


def aligned_similarity(signal: np.ndarray, reference: np.ndarray, rate: int) -> tuple[int, float, float]:
    """(lag, correlation, rms error relative to the reference's rms) of two mono signals after aligning."""
    lag = best_lag(signal, reference, rate)
    a, b = (signal[lag:], reference) if lag >= 0 else (signal, reference[-lag:])
    n = min(len(a), len(b))
    a, b = a[:n].astype(np.float64), b[:n].astype(np.float64)
    correlation = float(np.corrcoef(a, b)[0, 1])
    error = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))
    return lag, correlation, error


# ---------------------------------------------------------------- video

def counter_image(index: int, width: int = 160, height: int = 120) -> np.ndarray:
    """RGB frame: a red (left) / blue (right) band on top, then `index` in binary as a 2x5 grid of cells."""
    frame = np.zeros((height, width, 3), np.uint8)
    band = height // 4
    frame[:band, : width // 2] = (220, 30, 30)
    frame[:band, width // 2:] = (30, 30, 220)
    rows, cols = GRID
    cell_h, cell_w = (height - band) // rows, width // cols
    for bit in range(BITS):
        if index >> bit & 1:
            r, c = divmod(bit, cols)
            frame[band + r * cell_h: band + (r + 1) * cell_h, c * cell_w:(c + 1) * cell_w] = 255
    return frame


def read_counter(frame: np.ndarray) -> int:
    """The number `counter_image` drew; -1 when the frame is not upright (the band is missing or mirrored)."""
    height, width = frame.shape[:2]
    band = height // 4
    left = frame[band // 4: band * 3 // 4, width // 8: width * 3 // 8].reshape(-1, 3).mean(axis=0)
    right = frame[band // 4: band * 3 // 4, width * 5 // 8: width * 7 // 8].reshape(-1, 3).mean(axis=0)
    if not (left[0] > 150 > left[2] and right[2] > 150 > right[0]):
        return -1
    rows, cols = GRID
    cell_h, cell_w = (height - band) // rows, width // cols
    value = 0
    for bit in range(BITS):
        r, c = divmod(bit, cols)
        y0, x0 = band + r * cell_h, c * cell_w
        cell = frame[y0 + cell_h // 4: y0 + cell_h * 3 // 4, x0 + cell_w // 4: x0 + cell_w * 3 // 4]
        value |= int(cell.mean() > 127) << bit
    return value


def _frames_bytes(count: int, width: int, height: int, turn: int = 0) -> bytes:
    return b"".join(np.ascontiguousarray(np.rot90(counter_image(i, width, height), turn)).tobytes() for i in range(count))


def counter_video(path: Path, count: int, fps: float | str, width: int = 160, height: int = 120,
                  audio: Path | None = None, codec: tuple[str, ...] = ("-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p"),
                  extra: tuple[str, ...] = ()) -> Path:
    """`count` counter frames at a constant `fps` (number or fraction string), optionally with an audio track."""
    rate = str(Fraction(fps).limit_denominator(100000)) if not isinstance(fps, str) else fps
    inputs = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", rate, "-i", "pipe:0"]
    if audio is not None:
        inputs += ["-i", str(audio)]
    ffmpeg(*inputs, *codec, *extra, str(path), stdin=_frames_bytes(count, width, height))
    return path


def vfr_video(path: Path, segments: list[tuple[int, float]], width: int = 160, height: int = 120) -> Path:
    """A variable-frame-rate mp4: `segments` of (frames, fps) one after another, e.g. [(10, 30), (8, 12)].

    Timestamps are exact in the file's 1/600 s time base when every fps divides 600.
    """
    pieces, first, start = [], 0, Fraction(0)  # (first frame, frames, start time, fps) of each segment
    for frames, fps in segments:
        pieces.append((first, frames, start, fps))
        first, start = first + frames, start + frames / Fraction(fps).limit_denominator(1000)
    expression = ""
    for index, (first_frame, frames, start, fps) in reversed(list(enumerate(pieces))):
        here = f"({start.numerator}/{start.denominator}+(N-{first_frame})/{fps})"
        expression = here if index == len(pieces) - 1 else f"if(lt(N,{first_frame + frames}),{here},{expression})"
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-framerate", "30", "-i", "pipe:0",
           "-vf", f"settb=1/600,setpts='({expression})/TB'", "-fps_mode", "passthrough", "-enc_time_base", "1/600",
           "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", "-video_track_timescale", "600", str(path),
           stdin=_frames_bytes(first, width, height))
    return path


def phone_video(path: Path, count: int, fps: float, width: int = 96, height: int = 160) -> Path:
    """A portrait clip stored the way phones store it: landscape pixels plus a 90° clockwise display rotation."""
    stored = path.with_name(path.stem + ".stored" + path.suffix)
    ffmpeg("-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{height}x{width}", "-framerate", str(fps), "-i", "pipe:0",
           "-c:v", "libx264", "-crf", "10", "-pix_fmt", "yuv420p", str(stored),
           stdin=_frames_bytes(count, width, height, turn=1))  # pixels turned a quarter counter-clockwise
    # display matrix angles are counter-clockwise: -90 turns the picture back a quarter clockwise for display
    ffmpeg("-display_rotation:v", "-90", "-i", str(stored), "-c", "copy", str(path))
    stored.unlink()
    return path


def frame_times(path: Path, stream: str = "v:0") -> tuple[list[float], float]:
    """Presentation times (s, sorted) of a stream's packets as stored, and the time its last one ends."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    num, den = map(int, re.search(r"#tb 0: (\d+)/(\d+)", out).groups())
    packets = sorted((int(f[2]), int(f[3])) for f in (line.split(",") for line in out.splitlines() if not line.startswith("#")))
    times = [Fraction(pts * num, den) for pts, _ in packets]
    end = Fraction((packets[-1][0] + packets[-1][1]) * num, den)
    return [float(t) for t in times], float(end)


def shown_at(times: list[float], end: float, fps: float) -> list[int]:
    """For each output frame k (k / fps < end - start), the index of the source frame on screen at start + k / fps."""
    start = times[0]
    count = math.ceil((end - start) * fps - 1e-9)
    return [max(i for i, t in enumerate(times) if t - start <= k / fps + 1e-9) for k in range(count)]


def decoded_timeline(path: Path) -> dict[str, tuple[float, float, int]]:
    """What a player sees, per stream kind ("video", "audio"): (first time, end time, decoded frames), in seconds."""
    out = subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(path), "-map", "0:v:0?", "-map", "0:a:0?",
                          "-f", "framecrc", "-"], capture_output=True, text=True, check=True).stdout
    kinds = {int(i): kind for i, kind in re.findall(r"#media_type (\d+): (\w+)", out)}
    bases = {int(i): Fraction(int(n), int(d)) for i, n, d in re.findall(r"#tb (\d+): (\d+)/(\d+)", out)}
    spans: dict[str, list] = {}
    for line in out.splitlines():
        if line.startswith("#"):
            continue
        index, _, pts, duration = (int(x) for x in line.split(",")[:4])
        spans.setdefault(kinds[index], []).append((pts * bases[index], (pts + duration) * bases[index]))
    return {kind: (float(min(a for a, _ in s)), float(max(b for _, b in s)), len(s)) for kind, s in spans.items()}
