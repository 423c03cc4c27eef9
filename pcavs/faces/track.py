"""Find and follow one face through a video, and cut the crops the scorers need.

- `track_faces`: pcavs's face mesh (detect.py) on every frame; the largest face of the first frame
  with one, then in each frame the face that overlaps it most (IoU > 0.5; after 25 frames without
  it, the largest face again). Its box is the mesh's extent; frames without the face get a box
  interpolated between their neighbours (held at the ends), as the official pipeline does.
- `syncnet_crops`: the crops of syncnet_python's `run_pipeline.py`: with s half the larger side of
  the box, the box size and centre median-filtered over 13 frames (zero-padded ends, as
  scipy.signal.medfilt), a square of side 2.8 s whose top is s above the box centre (so centred
  0.4 s below it), cut from the frame padded with grey 110 and resized (bilinear) to 224x224.
  Only the detector differs: the official pipeline's S3FD box is stood in for by the mesh's extent.
- `aligned_crops`: each frame aligned as pcavs aligns a photo (align.py), shown as the generator's view
  of the crop: the framing of pcavs's crop-mode output, for SSIM, PSNR, mouth landmarks and CPBD.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import cv2
import numpy as np

from .align import ANCHOR_TARGETS, loader_view, similarity_transform, warp_to_crop
from ..core.errors import InputError
from ..core.facts import CROP_SIZE

CROP_SCALE = 0.4  # run_pipeline.py's crop_scale
SMOOTH = 13  # frames of the median filter on the box
PAD_VALUE = 110
SIZE = CROP_SIZE  # SyncNet's crop, the generator's size
MIN_IOU = 0.5
MAX_GAP = 25  # frames a face may go missing before the largest face is taken again
MIN_FOUND = 0.5  # the face must be found in at least this share of the frames


@dataclass
class FaceTrack:
    """One face through a video: a box per frame (interpolated where it was not found) and the mesh anchors."""

    boxes: np.ndarray  # (F, 4) x0, y0, x1, y1
    anchors: list[np.ndarray | None]  # (3, 2) per frame, None where the face was not found
    found: np.ndarray  # (F,) bool

    def __len__(self) -> int:
        return len(self.boxes)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_faces(frames: Iterable[np.ndarray], detector, name: str) -> FaceTrack:
    """Follow one face through RGB frames; InputError when it is found in under half of them.

    `detector` needs `detect_with_mesh` (pcavs's LiteRT detector).
    """
    boxes: list[np.ndarray | None] = []
    anchors: list[np.ndarray | None] = []
    last, missed = None, 0
    for frame in frames:
        chosen = None
        candidates = [(face, np.concatenate([mesh.min(0), mesh.max(0)])) for face, mesh in detector.detect_with_mesh(frame)]
        if candidates and (last is None or missed > MAX_GAP):
            chosen = candidates[0]
        elif candidates:
            overlap, best = max(((_iou(box, last), (face, box)) for face, box in candidates), key=lambda item: item[0])
            chosen = best if overlap > MIN_IOU else None
        if chosen is None:
            boxes.append(None)
            anchors.append(None)
            missed += 1
            continue
        last, missed = chosen[1], 0
        boxes.append(chosen[1])
        anchors.append(chosen[0].anchors)
    found = np.array([box is not None for box in boxes], bool)
    if len(boxes) == 0:
        raise InputError(f"{name}: no video frames")
    if found.mean() < MIN_FOUND:
        raise InputError(
            f"{name}: a face was found in only {found.sum()} of {len(found)} frames; "
            "give a video that shows one face most of the time (or a 224x224 face-crop video)"
        )
    index = np.flatnonzero(found)
    known = np.stack([boxes[i] for i in index])
    every = np.arange(len(boxes))
    filled = np.stack([np.interp(every, index, known[:, k]) for k in range(4)], axis=1)
    return FaceTrack(boxes=filled, anchors=anchors, found=found)


def medfilt(values: np.ndarray, taps: int) -> np.ndarray:
    """Running median over `taps` values, the ends padded with zeros (scipy.signal.medfilt's rule)."""
    half = taps // 2
    padded = np.concatenate([np.zeros(half, values.dtype), values, np.zeros(half, values.dtype)])
    return np.median(np.lib.stride_tricks.sliding_window_view(padded, taps), axis=1).astype(values.dtype)


def crop_boxes(boxes: np.ndarray) -> np.ndarray:
    """(F, 3) smoothed half-size s and centre (x, y) per frame, as run_pipeline.py's crop_video computes them."""
    half = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2
    return np.stack([medfilt(values, SMOOTH) for values in (half, centre_x, centre_y)], axis=1)


def syncnet_crop(frame: np.ndarray, half: float, centre_x: float, centre_y: float) -> np.ndarray:
    """One 224x224 crop, as run_pipeline.py cuts it from the frame padded with grey (without making the padded copy)."""
    pad = int(half * (1 + 2 * CROP_SCALE))
    # rows and columns of the padded frame, truncated to integers as the official slicing does
    top, bottom = int(centre_y + pad - half), int(centre_y + pad + half * (1 + 2 * CROP_SCALE))
    left, right = int(centre_x + pad - half * (1 + CROP_SCALE)), int(centre_x + pad + half * (1 + CROP_SCALE))
    height, width = frame.shape[:2]
    # a slice of the padded frame clamps at its edges, like numpy's slicing does
    top, left = max(top, 0), max(left, 0)
    bottom, right = min(bottom, height + 2 * pad), min(right, width + 2 * pad)
    if bottom <= top or right <= left:
        raise InputError("the face box is empty; the video's face track is broken")
    face = np.full((bottom - top, right - left, 3), PAD_VALUE, np.uint8)
    y0, y1 = max(top, pad), min(bottom, pad + height)
    x0, x1 = max(left, pad), min(right, pad + width)
    if y1 > y0 and x1 > x0:
        face[y0 - top : y1 - top, x0 - left : x1 - left] = frame[y0 - pad : y1 - pad, x0 - pad : x1 - pad]
    return cv2.resize(face, (SIZE, SIZE))


def syncnet_crops(frames: Iterable[np.ndarray], track: FaceTrack) -> Iterator[np.ndarray]:
    """The 224x224 SyncNet crops of the tracked face, one per frame."""
    for frame, (half, centre_x, centre_y) in zip(frames, crop_boxes(track.boxes)):
        yield syncnet_crop(frame, half, centre_x, centre_y)


def aligned_crops(frames: Iterable[np.ndarray], track: FaceTrack) -> Iterator[np.ndarray]:
    """The tracked face aligned frame by frame as pcavs aligns a photo (least-squares similarity of the three
    anchors), in the generator's view: the framing of pcavs's crop-mode output. A frame without the face
    takes the anchors of the nearest frame with it."""
    found = np.flatnonzero(track.found)
    for index, frame in enumerate(frames):
        anchors = track.anchors[found[np.argmin(np.abs(found - index))]]
        yield loader_view(warp_to_crop(frame, similarity_transform(anchors, ANCHOR_TARGETS)))
