"""Align faces to the 224x224 PC-AVS crop (spec §2), and paste generated faces back into the photo."""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from .detect import Detector, Face, get_detector
from .errors import InputError
from .images import read_image

CROP_SIZE = 224
ANCHOR_TARGETS = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])  # right eye, left eye, inner mouth
MIN_FACE_PX = 60  # narrower detected faces are refused
MAX_OUTSIDE = 0.10  # a face box may stick out of the image by this fraction of its size
LOADER_BOX = (16, 0, 208, 192)  # x0, y0, x1, y1 of the aligned crop that the networks see, resized to 224
SHIFT_MEMORY = 0.2  # video: b_t = 0.2 * b_{t-1} + 0.8 * b_t
FACE_CACHE_SIZE = 16


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst: 2x3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    # For z = x + iy, the best complex factor c minimises |b - c a|^2: c = sum(conj(a) b) / sum(|a|^2).
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    c = np.sum(np.conj(za) * zb) / max(np.sum(np.abs(za) ** 2), 1e-12)
    rotation = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return np.column_stack([rotation, dst_mean - rotation @ src_mean])


def warp_to_crop(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Bilinear warp of `image` by `matrix` (image -> crop) into a 224x224 crop, black outside."""
    return cv2.warpAffine(image, matrix, (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def loader_view(crop: np.ndarray) -> np.ndarray:
    """The part of an aligned crop the networks see (rows 0-191, columns 16-207), resized back to 224x224."""
    x0, y0, x1, y1 = LOADER_BOX
    return cv2.resize(np.ascontiguousarray(crop[y0:y1, x0:x1]), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def crop_to_generated(matrix: np.ndarray) -> np.ndarray:
    """Compose an image -> crop transform with crop -> generated-face pixels (the loader view)."""
    x0, y0, x1, _ = LOADER_BOX
    scale = CROP_SIZE / (x1 - x0)
    return np.vstack([scale * matrix[0] - [0, 0, scale * x0], scale * matrix[1] - [0, 0, scale * y0]])


@dataclass
class AlignedFace:
    crop: np.ndarray  # 224x224x3 uint8 RGB
    matrix: np.ndarray  # 2x3, image -> crop
    image_size: tuple[int, int]  # (height, width) of the source image

    @property
    def inverse(self) -> np.ndarray:
        """2x3, crop -> image."""
        return cv2.invertAffineTransform(self.matrix)


def choose_face(faces: list[Face], image_size: tuple[int, int], face_index: int | None, name: str) -> Face:
    """The face to use: the largest (with a warning when there are several) or `face_index`; checked for size and cut-off."""
    if not faces:
        raise InputError(f"{name}: no face found; use a photo with one clearly visible, roughly frontal face")
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise InputError(f"{name}: face_index={face_index}, but only {len(faces)} face(s) found (0 is the largest)")
        face = faces[face_index]
    else:
        face = faces[0]
        if len(faces) > 1:
            warnings.warn(f"{name}: {len(faces)} faces found; using the largest (choose another with face_index=)", stacklevel=3)
    x0, y0, x1, y1 = face.box
    width, height = x1 - x0, y1 - y0
    if width < MIN_FACE_PX:
        raise InputError(f"{name}: the face is only {width:.0f} px wide; use a photo where it is at least {MIN_FACE_PX} px")
    h, w = image_size
    outside = max(-x0, -y0, x1 - w, y1 - h) / max(width, height)
    if outside > MAX_OUTSIDE:
        raise InputError(f"{name}: the face is cut off by the image border; use a photo that shows the whole face")
    return face


def align_image(image: np.ndarray, detector: Detector, face_index: int | None = None, name: str = "face") -> AlignedFace:
    """Detect, choose and align one face of a photo."""
    face = choose_face(detector.detect(image), image.shape[:2], face_index, name)
    matrix = similarity_transform(face.anchors, ANCHOR_TARGETS)
    return AlignedFace(warp_to_crop(image, matrix), matrix, image.shape[:2])


def prepare_face(
    src: str | os.PathLike | np.ndarray, detector_name: str = "litert", face_index: int | None = None
) -> tuple[np.ndarray, AlignedFace]:
    """(full RGB image, aligned face) of a photo; cached by content, so repeated calls do not re-detect."""
    name = "the face array" if isinstance(src, np.ndarray) else str(src)
    image = read_image(src, name=name)
    key = (hashlib.sha256(image.tobytes()).hexdigest(), image.shape, detector_name, face_index)
    if key in _FACE_CACHE:
        _FACE_CACHE.move_to_end(key)
    else:
        _FACE_CACHE[key] = align_image(image, get_detector(detector_name), face_index, name)
        while len(_FACE_CACHE) > FACE_CACHE_SIZE:
            _FACE_CACHE.popitem(last=False)
    return image, _FACE_CACHE[key]


_FACE_CACHE: OrderedDict[tuple, AlignedFace] = OrderedDict()


def video_matrices(anchors: list[np.ndarray | None], name: str) -> list[np.ndarray]:
    """Per-frame transforms for a video: one similarity from the mean anchors, the mouth shift smoothed per frame.

    Frames without a face take the anchors of the nearest frame with one.
    """
    found = [i for i, a in enumerate(anchors) if a is not None]
    if not found:
        raise InputError(f"{name}: no face found in any frame; use a video that shows a face")
    known = np.array(found)
    filled = [anchors[known[np.argmin(np.abs(known - i))]] for i in range(len(anchors))]
    base = similarity_transform(np.mean(filled, axis=0), ANCHOR_TARGETS)
    linear = base[:, :2]
    matrices, shift = [], None
    for points in filled:
        target_shift = ANCHOR_TARGETS[2] - linear @ points[2]
        shift = target_shift if shift is None else SHIFT_MEMORY * shift + (1 - SHIFT_MEMORY) * target_shift
        matrices.append(np.column_stack([linear, shift]))
    return matrices


def align_frames(frames: Callable[[], Iterable[np.ndarray]], detector: Detector, name: str = "pose") -> Iterator[np.ndarray]:
    """Aligned crops of a frame stream, one per frame: a landmarks pass, then a warp pass (nothing held whole)."""
    anchors = []
    for frame in frames():
        faces = detector.detect(frame)
        anchors.append(faces[0].anchors if faces else None)
    matrices = video_matrices(anchors, name)
    for frame, matrix in zip(frames(), matrices):
        yield warp_to_crop(frame, matrix)


def face_mask(size: tuple[int, int] = (CROP_SIZE, CROP_SIZE)) -> np.ndarray:
    """Feathered elliptical mask (float32 in [0, 1]) over the face of a generated 224x224 frame."""
    mask = np.zeros(size, np.float32)
    cv2.ellipse(mask, (112, 124), (76, 98), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(mask, (0, 0), 9)


class Paster:
    """Pastes generated faces into one photo: `matrix` maps photo pixels to face pixels."""

    def __init__(self, background: np.ndarray, matrix: np.ndarray):
        self.background = background
        h, w = background.shape[:2]
        inverse = cv2.invertAffineTransform(matrix)
        corners = np.array([[0, 0], [CROP_SIZE, 0], [0, CROP_SIZE], [CROP_SIZE, CROP_SIZE]], np.float64)
        mapped = corners @ inverse[:, :2].T + inverse[:, 2]
        x0, y0 = np.clip(np.floor(mapped.min(0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(mapped.max(0)).astype(int) + 1, 0, [w, h])
        self.window = (slice(y0, y1), slice(x0, x1))
        self.local = inverse.copy()
        self.local[:, 2] -= (x0, y0)  # face -> window pixels
        self.size = (int(x1 - x0), int(y1 - y0))
        self.mask = self._warp(face_mask())[:, :, None] if self.size[0] > 0 and self.size[1] > 0 else None

    def _warp(self, face: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(face, self.local, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def __call__(self, face: np.ndarray) -> np.ndarray:
        out = self.background.copy()
        if self.mask is None:
            return out
        region = out[self.window].astype(np.float32)
        blended = region + self.mask * (self._warp(face).astype(np.float32) - region)
        out[self.window] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out

