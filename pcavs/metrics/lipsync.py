"""LSE-D and LSE-C: SyncNet's windows and scores, as the official `SyncNetInstance.evaluate()` computes them.

Input path (what makes the numbers official-compatible): the video's frames go through ffmpeg's
default JPEG encoder and back (`extract_frames`), the audio through ffmpeg to 16 kHz mono PCM16
(`extract_audio`). Frames are 224x224 BGR at 25 fps, one per 640 samples: a video at another or a
variable frame rate is first brought to 25 fps as syncnet_python's run_pipeline.py does (`to_25fps`).

Windows: min_length = min(frames, samples // 640); N = min_length - 5 windows (the last full one is
never scored, as in the official code). Window i is frames i..i+4 and MFCC columns 4i..4i+19.
Scores: the audio embeddings are padded with 15 zero vectors at each end; dists[i, j] is the
distance (with torch's 1e-6) of video window i to audio window i + j - 15; mdist[j] its mean over
i; LSE-D = min mdist, offset = 15 - argmin (negative: the audio is late), LSE-C = median - min.
"""
from __future__ import annotations

import contextlib
import subprocess
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Protocol

import cv2
import numpy as np
import torch

from ..core.devices import ShrinkingBatches
from ..core.errors import InputError
from ..core.facts import CROP_SIZE, FPS, SAMPLE_RATE, SAMPLES_PER_FRAME
from ..faces.track import medfilt
from ..media.ffmpeg import WHOLE, Ffmpeg, file_url, last_line, run
from ..media.probe import MediaInfo
from .mfcc import mfcc
from .syncnet import SyncNet

SIZE = CROP_SIZE  # SyncNet's face crop: the generator's faces are scored as they are
VSHIFT = 15
WINDOW = 5  # frames per video window
MFCC_PER_FRAME = 4
MFCC_WINDOW = 20
BATCH = 20  # windows per batch, as the official code (batching does not change the numbers); fewer when memory runs out
DIST_EPS = 1e-6  # torch.nn.functional.pairwise_distance's default
CONF_FILTER = 9  # taps of the median filter on the per-window confidence


class Frames(Protocol):
    """A sequence of 224x224x3 uint8 BGR frames: len() and slicing to an (n, 224, 224, 3) array."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: slice) -> np.ndarray: ...


class JpegFrames:
    """The JPEG files of a folder, sorted by name, read on demand with cv2.imread (BGR), as the official code reads them."""

    def __init__(self, folder: Path, name: str):
        self.files = sorted(Path(folder).glob("*.jpg"))
        self.name = name

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: slice) -> np.ndarray:
        images = []
        for path in self.files[index]:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise InputError(f"{self.name}: a decoded frame could not be read back ({path.name})")
            if image.shape != (SIZE, SIZE, 3):
                raise InputError(
                    f"{self.name}: frames are {image.shape[1]}x{image.shape[0]}; SyncNet scores 224x224 face crops"
                )
            images.append(image)
        return np.stack(images) if images else np.zeros((0, SIZE, SIZE, 3), np.uint8)


def _run_ffmpeg(args: list[str], name: str, what: str) -> None:
    try:
        done = run(args, WHOLE)
    except subprocess.TimeoutExpired:
        raise InputError(f"{name}: ffmpeg took over {WHOLE} s to {what}; copy it to a local disk") from None
    if done.returncode != 0:
        reason = last_line(done.stderr.decode(errors="replace"))
        raise InputError(f"{name}: ffmpeg could not {what} ({reason}); is the file complete and a video?")


def is_25fps(info: MediaInfo) -> bool:
    """Whether a video's frames already come one per 40 ms: 25 fps, constant (ffmpeg's average and base rates agree)."""
    return info.fps == FPS and info.base_fps in (None, FPS)


def to_25fps(video: str | Path, folder: Path, duration: float | None) -> Path:
    """`video` at a constant 25 fps, as `folder`/video.avi, made by run_pipeline.py's conversion
    (`ffmpeg -i VIDEO -qscale:v 2 -async 1 -r 25 video.avi`: frame k shows the picture on screen at
    k/25 s, near-lossless MPEG-4) with two differences: no sound (it is decoded from the source, as
    for a 25 fps video), and no frames past `duration` (the copies of the last picture that `-r`
    appends beyond the end of the video)."""
    out = folder / "video.avi"
    limit = ["-t", f"{duration:.6f}"] if duration else []
    _run_ffmpeg(["-y", "-i", file_url(video), "-an", "-qscale:v", "2", "-r", str(FPS), *limit, str(out)],
                str(video), "bring it to 25 fps")
    return out


def extract_frames(video: str | Path, folder: Path) -> JpegFrames:
    """Every frame of `video` as ffmpeg's default JPEGs in `folder` (000001.jpg, ...), as the official scorer makes them."""
    _run_ffmpeg(["-y", "-i", file_url(video), "-threads", "1", "-f", "image2", str(folder / "%06d.jpg")],
                str(video), "decode its frames")
    return JpegFrames(folder, str(video))


def jpeg_round_trip(frames: Iterable[np.ndarray], folder: Path, name: str) -> JpegFrames:
    """224x224 RGB frames through the same JPEG encoder (from yuv420p, as a decoded video would enter it),
    streamed to ffmpeg as they come."""
    args = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{SIZE}x{SIZE}", "-framerate", str(FPS), "-i", "pipe:0",
            "-vf", "format=yuv420p", "-threads", "1", "-f", "image2", str(folder / "%06d.jpg")]
    count = 0
    encoder = Ffmpeg(args, stdin=subprocess.PIPE)
    try:
        try:
            for frame in frames:
                frame = np.ascontiguousarray(frame, np.uint8)
                if frame.shape != (SIZE, SIZE, 3):
                    raise InputError(f"{name}: frames are {frame.shape}; SyncNet scores 224x224x3 face crops")
                encoder.proc.stdin.write(memoryview(frame).cast("B"))
                count += 1
            encoder.proc.stdin.close()
        except BrokenPipeError:
            pass
        status, reason = encoder.finish()
    finally:
        encoder.close()
    if count == 0:
        raise InputError(f"{name}: no frames to score")
    if status != 0:
        raise InputError(f"{name}: ffmpeg could not encode the face crops ({reason})")
    return JpegFrames(folder, name)


def extract_audio(media: str | Path, folder: Path) -> np.ndarray:
    """The first audio track of `media` as 16 kHz mono int16 samples, through ffmpeg and a wav file as the official scorer reads it."""
    path = folder / "audio.wav"
    _run_ffmpeg(["-y", "-i", file_url(media), "-async", "1", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE),
                 str(path)], str(media), "decode its audio")
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2 or wav.getframerate() != SAMPLE_RATE:
            raise InputError(f"{media}: ffmpeg did not give 16 kHz mono PCM16 audio")
        return np.frombuffer(wav.readframes(wav.getnframes()), "<i2").copy()


def num_windows(num_frames: int, num_samples: int) -> int:
    """Scored windows: min(frames, samples // 640) - 5."""
    return min(num_frames, num_samples // SAMPLES_PER_FRAME) - WINDOW


def lip_batch(frames: np.ndarray, count: int) -> torch.Tensor:
    """(count + 4, 224, 224, 3) uint8 BGR frames -> `count` windows (count, 3, 5, 224, 224) float32, 0-255.

    Made in one pass and stored (count, 224, 224, 3, 5), so that the lip tower's folded input (count, 15, 224, 224)
    is a channels-last view of it.
    """
    windows = torch.from_numpy(np.ascontiguousarray(frames)).unfold(0, WINDOW, 1)[:count]  # (count, H, W, 3, 5) view
    return torch.empty(windows.shape, dtype=torch.float32).copy_(windows).permute(0, 3, 4, 1, 2)


def audio_batch(cepstra: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """Windows start..stop-1 of a (13, T) float32 MFCC tensor -> (n, 1, 13, 20)."""
    return torch.stack([cepstra[None, :, MFCC_PER_FRAME * i : MFCC_PER_FRAME * i + MFCC_WINDOW] for i in range(start, stop)])


@contextlib.contextmanager
def _ieee_float32(device: torch.device | str) -> Iterator[None]:
    """cuDNN may run float32 convolutions as TF32 (a 10-bit mantissa), far outside the scorer's 1e-4: not here."""
    if torch.device(device).type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = saved


@torch.inference_mode()
def embed(
    net: SyncNet, frames: Frames, samples: np.ndarray, device: torch.device | str = "cpu",
    batch_size: int = BATCH, progress: bool = False, name: str = "video",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Video and audio embeddings (N, 1024) float32 on the CPU, one pair per window.

    When the device runs out of memory the batch is halved, down to one window, and the smaller
    size is kept for the rest of the video (see ShrinkingBatches).
    """
    count = num_windows(len(frames), len(samples))
    if count < 1:
        raise InputError(
            f"{name}: too short to score ({len(frames)} frames, {len(samples) / SAMPLE_RATE:.2f} s of audio); "
            "SyncNet needs at least 6 frames (0.24 s) of both"
        )
    cepstra = torch.from_numpy(mfcc(samples)).float()
    batches = ShrinkingBatches(torch.device(device), "SyncNet", "window")
    from tqdm.auto import tqdm

    with _ieee_float32(device), tqdm(total=count, unit="window", desc="syncnet", disable=not progress) as bar:
        def windows(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            video = lip_batch(frames[start : stop + WINDOW - 1], stop - start)
            lip = net.lip(video.to(device)).float().cpu()
            aud = net.audio(audio_batch(cepstra, start, stop).to(device)).float().cpu()
            bar.update(stop - start)
            return lip, aud

        done = batches(windows, count, batch_size)
    return torch.cat([lip for lip, _ in done]), torch.cat([aud for _, aud in done])


@dataclass
class SyncScores:
    """What the official `evaluate()` computes from the embeddings (names as in its code)."""

    offset: int  # frames; negative: the audio is late
    minval: float  # LSE-D
    conf: float  # LSE-C
    mdist: np.ndarray  # (31,) mean distance at offsets 15 .. -15 (index j: offset 15 - j)
    dists: np.ndarray  # (N, 31)
    fdist: np.ndarray  # (N,) each window's distance at the best offset
    fconf: np.ndarray  # (N,) median(mdist) - fdist: per-window confidence
    fconfm: np.ndarray  # (N,) fconf through a 9-tap median filter (zero-padded), as the official code prints

    @property
    def num_windows(self) -> int:
        return len(self.dists)

    @property
    def offsets(self) -> np.ndarray:
        """The offset (frames) of each column of `dists` / entry of `mdist`."""
        return VSHIFT - np.arange(2 * VSHIFT + 1)


def distances(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT, chunk: int = 1024) -> torch.Tensor:
    """(N, 2 vshift + 1): distance of video window i to audio window i + j - vshift (zero vectors past the ends)."""
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    width = 2 * vshift + 1
    out = []
    for start in range(0, len(lip), chunk):
        stop = min(len(lip), start + chunk)
        shifted = padded[start : stop + width - 1].unfold(0, width, 1).transpose(1, 2)  # (n, width, 1024)
        out.append(torch.nn.functional.pairwise_distance(lip[start:stop, None, :].expand_as(shifted), shifted, eps=DIST_EPS))
    return torch.cat(out)


def score(lip: torch.Tensor, aud: torch.Tensor, vshift: int = VSHIFT) -> SyncScores:
    """Offset, LSE-D, LSE-C and the per-window numbers from the embeddings."""
    dists = distances(lip.float(), aud.float(), vshift)
    mdist = dists.mean(0)
    minval, minidx = torch.min(mdist, 0)
    median = torch.median(mdist)
    fdist = dists[:, minidx].numpy()
    fconf = median.numpy() - fdist
    return SyncScores(
        offset=int(vshift - minidx), minval=float(minval), conf=float(median - minval), mdist=mdist.numpy(),
        dists=dists.numpy(), fdist=fdist, fconf=fconf, fconfm=medfilt(fconf, CONF_FILTER),
    )
