"""`pcavs.evaluate`: lip-sync scores (LSE-D, LSE-C, offset) of any talking-face video, and image quality.

Routes to the 224x224 face crops SyncNet scores:
- "crop": the video already is 224x224 (pcavs `--mode crop`, LRS-style clips): scored as it is,
  through ffmpeg's JPEGs exactly as the official scorer (see lipsync.py).
- "track": any other video: one face is found and followed with pcavs's face mesh and cropped as
  the official `run_pipeline.py` crops (facetrack.py); the crops go through the same JPEG encoder.
Scores of different routes are different numbers (the face sits differently in the crop): report the route.
SyncNet pairs each frame with 40 ms of audio, so a video that is not 25 fps (or has a variable
frame rate) is first brought to 25 fps as run_pipeline.py does (lipsync.to_25fps), and everything
is measured on that copy; `EvalResult.fps` and `.resampled` say so.

Quality (on 224 face crops: the frames of a 224 video, else pcavs's alignment in the generator's
view): `cpbd` of the video; with `reference=` (the ground truth), per-frame `ssim`, `psnr` and `lmd`
(lip points of the face mesh, pixels of the crop), averaged over the frames both videos have.
"""
from __future__ import annotations

import functools
import io
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from ..core.devices import resolve_device
from ..core.errors import InputError
from ..core.files import AtomicFile
from ..core.tables import read_table
from ..faces import track as facetrack
from ..media.probe import probe
from ..media.video import iter_frames
from . import lipsync, quality
from ..models.download import ensure
from .syncnet import SyncNet, load_syncnet

MIN_FACE_FRACTION = facetrack.MIN_FOUND  # share of compared frames whose mouths must be found for lmd


@dataclass
class EvalResult:
    """Scores of one video. `sync` holds every number the official scorer computes."""

    video: str
    route: str  # "crop" (a 224x224 video scored as it is) or "track" (face found, followed and cropped)
    num_frames: int  # at 25 fps
    sync: lipsync.SyncScores
    fps: float | None = None  # the video's own frame rate (ffmpeg's average)
    resampled: bool = False  # True: brought to 25 fps as run_pipeline.py does before anything was measured
    audio: str | None = None
    reference: str | None = None
    cpbd: float | None = None  # mean over frames; higher is sharper
    ssim: float | None = None  # with reference=: means over the compared frames
    psnr: float | None = None
    lmd: float | None = None
    frames_compared: int | None = None
    seconds: float = 0.0
    per_frame: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # ssim, psnr, lmd, cpbd per frame

    @property
    def lse_d(self) -> float:
        """Mean distance at the best offset (lower is better)."""
        return self.sync.minval

    @property
    def lse_c(self) -> float:
        """Median minus minimum of the mean distances over offsets (higher is better)."""
        return self.sync.conf

    @property
    def offset(self) -> int:
        """Frames (at 25 fps); negative means the audio is late."""
        return self.sync.offset

    @property
    def confidence(self) -> np.ndarray:
        """Per-window confidence (median of the mean distances minus the window's distance at the best offset)."""
        return self.sync.fconf

    def to_dict(self, windows: bool = True) -> dict:
        """JSON-ready numbers (inf and NaN become None); `windows` adds the per-window and per-offset arrays."""
        out = {
            "video": self.video, "audio": self.audio, "reference": self.reference, "route": self.route,
            "fps": self.fps, "resampled": self.resampled, "frames": self.num_frames, "windows": self.sync.num_windows,
            "lse_d": self.lse_d, "lse_c": self.lse_c, "offset": self.offset,
            "cpbd": self.cpbd, "ssim": self.ssim, "psnr": self.psnr, "lmd": self.lmd,
            "frames_compared": self.frames_compared, "seconds": round(self.seconds, 3),
        }
        if windows:
            out["offsets"] = self.sync.offsets.tolist()
            out["mean_distance"] = self.sync.mdist.tolist()
            out["confidence"] = self.sync.fconf.tolist()
            out["confidence_smoothed"] = self.sync.fconfm.tolist()
        return {k: _plain(v) for k, v in out.items()}

    def summary(self) -> str:
        """A small table for the terminal."""
        rate = "n/a" if self.fps is None else f"{self.fps:g} fps"
        rows = [("video", self.video), ("route", _ROUTE_NAMES[self.route]),
                ("frame rate", f"{rate}, brought to 25 fps as run_pipeline.py does" if self.resampled else rate),
                ("LSE-D (lower is better)", f"{self.lse_d:.3f}"), ("LSE-C (higher is better)", f"{self.lse_c:.3f}"),
                ("offset (frames; < 0: audio late)", f"{self.offset:+d}"),
                ("windows scored", str(self.sync.num_windows))]
        if self.cpbd is not None:
            rows.append(("CPBD (sharpness)", _number(self.cpbd, 3)))
        if self.reference is not None:
            rows += [("reference", self.reference), ("SSIM", _number(self.ssim, 3)), ("PSNR (dB)", _number(self.psnr, 2)),
                     ("LMD (px of the 224 crop)", _number(self.lmd, 3)), ("frames compared", str(self.frames_compared))]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)

    def plot(self, out: str | os.PathLike | None = None):
        """See `plot_scores`."""
        return plot_scores(self, out)


_ROUTE_NAMES = {"crop": "crop (224x224 video scored as it is)", "track": "track (face found and cropped as run_pipeline.py)"}


def _plain(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _number(value: float | None, digits: int) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def resolve_syncnet(syncnet: SyncNet | str | os.PathLike | None, device: torch.device) -> SyncNet:
    """A loaded SyncNet on `device`: the given module, or loaded from the given file, else $PCAVS_SYNCNET, else the
    user cache (downloaded there on first use; see models.download.ensure)."""
    if isinstance(syncnet, SyncNet):
        return syncnet.to(device)
    return load_syncnet(ensure("syncnet", syncnet)).to(device)


def _check_video(video: str | os.PathLike, audio: str | os.PathLike | None):
    info = probe(video)
    if not info.has_video or not info.width or not info.height:
        raise InputError(f"{video}: has no video stream; give the talking-face video to score")
    if audio is None and not info.has_audio:
        raise InputError(f"{video}: has no audio track; pass the speech with audio= (--audio)")
    if audio is not None and not probe(audio).has_audio:
        raise InputError(f"{audio}: has no audio track; give the speech the video was made from")
    return info


def _frames(video: str | os.PathLike) -> Iterator[np.ndarray]:
    return iter_frames(video)


def _route(info) -> str:
    return "crop" if (info.width, info.height) == (lipsync.SIZE, lipsync.SIZE) else "track"


def _track(video, detector, progress: bool, name: str) -> facetrack.FaceTrack:
    from tqdm.auto import tqdm

    frames = tqdm(_frames(video), unit="frame", desc="faces", disable=not progress)
    return facetrack.track_faces(frames, detector, name)


def _quality_crops(video, route: str, track: facetrack.FaceTrack | None) -> Iterator[np.ndarray]:
    if route == "crop":
        return _frames(video)
    return facetrack.aligned_crops(_frames(video), track)


def evaluate(
    video: str | os.PathLike,
    audio: str | os.PathLike | None = None,
    reference: str | os.PathLike | None = None,
    syncnet: SyncNet | str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
) -> EvalResult:
    """Lip-sync and quality scores of a talking-face video.

    video: any video ffmpeg reads; a 224x224 one is scored as it is ("crop" route), any other is
        face-tracked and cropped as syncnet_python's run_pipeline.py does ("track" route).
    audio: the speech to score against (default: the video's own audio track).
    reference: the ground-truth video, for SSIM, PSNR and LMD.
    syncnet: the SyncNet weights file or a loaded `SyncNet` (default: $PCAVS_SYNCNET, then the user
        cache, where the first use downloads them).
    device: "auto", "cpu", "cuda", ...; progress: show progress bars.
    """
    start = time.perf_counter()
    info = _check_video(video, audio)
    if reference is not None:
        ref_info = probe(reference)
        if not ref_info.has_video or not ref_info.width or not ref_info.height:
            raise InputError(f"{reference}: has no video stream; give the ground-truth video as reference")
    resolved = resolve_device(device)
    net = resolve_syncnet(syncnet, resolved)
    route = _route(info)
    detector = None
    track = None
    name = str(video)
    resampled = not lipsync.is_25fps(info)
    with tempfile.TemporaryDirectory(prefix="pcavs-eval-") as tmp:
        folder = Path(tmp)
        measured = lipsync.to_25fps(video, folder, info.duration) if resampled else video  # what every number is of
        if route == "crop":
            frames = lipsync.extract_frames(measured, folder)
        else:
            detector = _detector()
            track = _track(measured, detector, progress, name)
            frames = lipsync.jpeg_round_trip(facetrack.syncnet_crops(_frames(measured), track), folder, name)
        samples = lipsync.extract_audio(audio if audio is not None else video, folder)
        scores = _score(net, frames, samples, resolved, progress, name)
        result = EvalResult(video=name, route=route, num_frames=len(frames), sync=scores, fps=info.fps,
                            resampled=resampled, audio=str(audio) if audio is not None else None)
        _add_quality(result, measured, route, track, reference, detector, progress, name)
    result.seconds = time.perf_counter() - start
    return result


def evaluate_faces(
    faces: Iterable[np.ndarray],
    audio: str | os.PathLike,
    syncnet: SyncNet | str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    name: str = "generated faces",
) -> EvalResult:
    """Lip-sync scores of 224x224 RGB face crops (e.g. `pcavs.generate(...).faces`) against `audio` ("crop" route).

    The crops go through the same JPEG encoder as a video's frames would.
    """
    start = time.perf_counter()
    if not probe(audio).has_audio:
        raise InputError(f"{audio}: has no audio track; give the speech the faces were made from")
    resolved = resolve_device(device)
    net = resolve_syncnet(syncnet, resolved)
    with tempfile.TemporaryDirectory(prefix="pcavs-eval-") as tmp:
        folder = Path(tmp)
        frames = lipsync.jpeg_round_trip(faces, folder, name)
        samples = lipsync.extract_audio(audio, folder)
        scores = _score(net, frames, samples, resolved, progress, name)
        num_frames = len(frames)
    return EvalResult(video=name, route="crop", num_frames=num_frames, sync=scores, fps=float(lipsync.FPS),
                      audio=str(audio), seconds=time.perf_counter() - start)


def _detector():
    from ..faces.detect import get_detector

    return get_detector("litert")


def _score(net: SyncNet, frames, samples: np.ndarray, device: torch.device, progress: bool, name: str) -> lipsync.SyncScores:
    lip, aud = lipsync.embed(net, frames, samples, device, progress=progress, name=name)
    return lipsync.score(lip, aud)


def _add_quality(result: EvalResult, video, route: str, track, reference, detector, progress: bool, name: str) -> None:
    """CPBD of every frame of the video; with a reference, SSIM, PSNR and LMD on the frames both videos have.
    `video`: the file to read (the 25 fps copy when one was made); `name`: the video's name in messages."""
    from tqdm.auto import tqdm

    truth = None
    if reference is not None:
        detector = detector or _detector()
        ref_route = _route(probe(reference))
        ref_track = _track(reference, detector, progress, str(reference)) if ref_route == "track" else None
        truth = iter(_quality_crops(reference, ref_route, ref_track))
    sharpness, similarity, noise, mouth = [], [], [], []
    for crop in tqdm(_quality_crops(video, route, track), unit="frame", desc="quality", disable=not progress):
        sharpness.append(quality.cpbd(crop))
        true_crop = next(truth, None) if truth is not None else None
        if true_crop is None:
            continue
        similarity.append(quality.ssim(crop, true_crop))
        noise.append(quality.psnr(crop, true_crop))
        mouth.append(_mouth_distance(detector, crop, true_crop))
    values = np.array(sharpness)
    result.per_frame["cpbd"] = values
    result.cpbd = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
    if reference is None:
        return
    count = len(similarity)
    found = int(np.isfinite(mouth).sum())
    if count == 0:
        raise InputError(f"{reference}: no frames to compare with {name}")
    if found < MIN_FACE_FRACTION * count:
        raise InputError(
            f"{name}: the mouth was found in only {found} of {count} frames of it and its reference; "
            "LMD needs a visible face in both videos"
        )
    result.reference = str(reference)
    result.frames_compared = count
    result.ssim = float(np.mean(similarity))
    result.psnr = float(np.mean(noise))
    result.lmd = float(np.nanmean(mouth))
    result.per_frame.update(ssim=np.array(similarity), psnr=np.array(noise), lmd=np.array(mouth))


def _mouth_distance(detector, crop: np.ndarray, true_crop: np.ndarray) -> float:
    """Lip-point distance of the two crops' largest faces; NaN when either shows none."""
    found = detector.detect_with_mesh(crop)
    if not found:
        return math.nan
    true_found = detector.detect_with_mesh(true_crop)
    if not true_found:
        return math.nan
    return quality.mouth_distance(found[0][1], true_found[0][1])


CSV_COLUMNS = ("video", "audio", "reference")


def read_csv(path: str | os.PathLike) -> list[tuple[int, dict[str, Path | None]]]:
    """(line number, {video, audio, reference}) for each row of a CSV with a `video` column (audio and
    reference optional, empty cells meaning none); relative paths are relative to the CSV's folder."""
    table = read_table(path, "a video column (and optionally audio, reference)")
    if "video" not in table.columns:
        raise InputError(f"{path}: needs a header with a video column (and optionally audio, reference)")
    return [(number, {name: table.path(row.get(name)) for name in CSV_COLUMNS}) for number, row in table.rows]


def results_table(results: list[EvalResult]) -> str:
    """One line per scored video: route, LSE-D, LSE-C, offset and the quality numbers there are."""
    header = ("video", "route", "LSE-D", "LSE-C", "offset", "CPBD", "SSIM", "PSNR", "LMD")
    rows = [header]
    for r in results:
        rows.append((Path(r.video).name, r.route, f"{r.lse_d:.3f}", f"{r.lse_c:.3f}", f"{r.offset:+d}", _number(r.cpbd, 3),
                     _number(r.ssim, 3), _number(r.psnr, 2), _number(r.lmd, 2)))
    widths = [max(len(row[k]) for row in rows) for k in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


@functools.lru_cache(maxsize=1)
def _figure_class() -> type:
    """matplotlib's Figure that a notebook shows as a picture without pyplot (which would keep every figure open)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise InputError("plotting needs matplotlib: pip install 'pcavs[eval]' (or pip install matplotlib)") from None

    class ScoresFigure(Figure):
        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100)
            return buffer.getvalue()

    return ScoresFigure


def plot_scores(result: EvalResult, out: str | os.PathLike | None = None):
    """Per-window confidence over time and the mean distance against offset; a matplotlib Figure.

    `out`: also write it as a PNG there (atomically). Needs matplotlib (`pip install pcavs[eval]`).
    """
    scores = result.sync
    figure = _figure_class()(figsize=(10, 3.6), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=(2, 1))
    seconds = np.arange(scores.num_windows) / 25.0
    left.plot(seconds, scores.fconf, color="0.75", linewidth=0.8, label="per window")
    left.plot(seconds, scores.fconfm, color="tab:blue", linewidth=1.5, label="9-window median")
    left.axhline(0.0, color="0.5", linewidth=0.6)
    left.set(xlabel="time (s, window start)", ylabel="confidence", title=f"LSE-C {result.lse_c:.2f}")
    left.legend(loc="best", fontsize="small")
    right.plot(scores.offsets, scores.mdist, marker=".", color="tab:orange")
    right.axvline(result.offset, color="tab:red", linewidth=0.8, linestyle="--")
    right.set(xlabel="offset (frames; < 0: audio late)", ylabel="mean distance",
              title=f"LSE-D {result.lse_d:.2f} at offset {result.offset:+d}")
    figure.suptitle(f"{Path(result.video).name} ({result.route} route)", fontsize="medium")
    if out is not None:
        try:
            with AtomicFile(out) as tmp:
                figure.savefig(tmp, format="png", dpi=100)
        except OSError as exc:
            raise InputError(f"{out}: cannot write the plot ({exc.strerror}); choose another path") from None
    return figure
