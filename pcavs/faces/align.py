"""Align faces to the 224x224 PC-AVS crop (spec §2), and paste generated faces back into the photo.

A photo: its three anchors (see detect.py) are mapped by a least-squares similarity onto
ANCHOR_TARGETS, and the photo is warped into the crop (bilinear, black outside).
A video: one similarity from the anchors averaged over all frames; per frame its
translation is shifted so that frame's mouth lands on the mouth target, the shift smoothed
over time (b_t = 0.2 b_{t-1} + 0.8 b_t); frames without a face borrow the nearest frame's anchors.
Photos whose face is under MIN_FACE_PX wide or cut off by the border are refused; faces far
larger than the crop are anti-aliased before the bilinear warp. `Paster` / `paste_back` put
faces back into the full-size photo through the inverse transform and a feathered mask.
"""
from __future__ import annotations

import hashlib
import math
import os
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np

from .detect import Detector, Face, get_detector
from ..core.errors import InputError
from ..core.facts import CROP_SIZE
from ..media.images import read_image, to_rgb8, warp_affine

ANCHOR_TARGETS = np.array([[87.0, 59.0], [137.0, 59.0], [112.0, 120.0]])  # right eye, left eye, inner mouth
ANCHOR_TARGETS.setflags(write=False)
LOADER_BOX = (16, 0, 208, 192)  # x0, y0, x1, y1 of the aligned crop that the networks see, resized to 224
FACE_BOX = (51.0, 19.0, 173.0, 157.0)  # the face (mesh extent: brow line to chin, cheek to cheek) in an aligned crop
MIN_FACE_PX = 60  # faces narrower than this in the photo are refused
MAX_OUTSIDE = 0.15  # at most this fraction of FACE_BOX may fall outside the photo (black in the crop)
SHIFT_MEMORY = 0.2  # video: b_t = 0.2 * b_{t-1} + 0.8 * b_t
FACE_CACHE_SIZE = 16


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) mapping src to dst: 2x3.

    src, dst: (N, 2) points, N >= 2.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"similarity_transform needs two (N, 2) arrays with N >= 2, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    a, b = src - src_mean, dst - dst_mean
    # As complex numbers z = x + iy, the best factor c (scale and rotation) minimises sum |b - c a|^2:
    # c = sum(conj(a) b) / sum(|a|^2).
    za, zb = a[:, 0] + 1j * a[:, 1], b[:, 0] + 1j * b[:, 1]
    c = np.sum(np.conj(za) * zb) / max(float(np.sum(np.abs(za) ** 2)), 1e-12)
    linear = np.array([[c.real, -c.imag], [c.imag, c.real]])
    return np.column_stack([linear, dst_mean - linear @ src_mean])


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N, 2) points through a 2x3 affine."""
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def scale_of(matrix: np.ndarray) -> float:
    """The (geometric mean) scale factor of a 2x3 affine."""
    return math.sqrt(abs(np.linalg.det(matrix[:, :2])))


def warp_to_crop(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """`image` warped by `matrix` (2x3, image -> crop) into a 224x224 crop: bilinear, black outside.

    Where the face is over twice the crop's size in the image, the image is first averaged over
    k x k blocks (anti-aliasing; the reference samples it bilinearly as is).
    """
    return warp_affine(image, matrix, (CROP_SIZE, CROP_SIZE))


def loader_view(crop: np.ndarray) -> np.ndarray:
    """The part of an aligned crop the networks see (rows 0-191, columns 16-207), resized back to 224x224."""
    x0, y0, x1, y1 = LOADER_BOX
    return cv2.resize(np.ascontiguousarray(crop[y0:y1, x0:x1]), (CROP_SIZE, CROP_SIZE), interpolation=cv2.INTER_LINEAR)


def crop_to_generated(matrix: np.ndarray) -> np.ndarray:
    """Compose an image -> crop transform with crop -> generated-face pixels (the loader view)."""
    return _compose(_crop_to_loader(), matrix)


def _crop_to_loader() -> np.ndarray:
    """2x3: aligned-crop pixels -> loader-view pixels (as cv2.resize maps them)."""
    x0, y0, x1, y1 = LOADER_BOX
    sx, sy = CROP_SIZE / (x1 - x0), CROP_SIZE / (y1 - y0)
    return np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]])


def _compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine `outer` after `inner`."""
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


@dataclass
class AlignedFace:
    crop: np.ndarray  # 224x224x3 uint8 RGB
    matrix: np.ndarray  # 2x3, image -> crop
    image_size: tuple[int, int]  # (height, width) of the source image

    @property
    def inverse(self) -> np.ndarray:
        """2x3, crop -> image."""
        return cv2.invertAffineTransform(self.matrix)


def face_width(matrix: np.ndarray) -> float:
    """Width in image pixels of the face that `matrix` (image -> crop) aligns."""
    return (FACE_BOX[2] - FACE_BOX[0]) / scale_of(matrix)


def outside_fraction(matrix: np.ndarray, image_size: tuple[int, int]) -> float:
    """Fraction of the face (FACE_BOX of the crop) that lies outside an image of (height, width)."""
    x0, y0, x1, y1 = FACE_BOX
    grid = np.stack(np.meshgrid(np.linspace(x0, x1, 24), np.linspace(y0, y1, 24)), -1).reshape(-1, 2)
    points = transform_points(cv2.invertAffineTransform(matrix), grid)
    h, w = image_size
    inside = (points[:, 0] >= -0.5) & (points[:, 0] <= w - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] <= h - 0.5)
    return 1.0 - inside.mean()


def choose_face(faces: list[Face], image_size: tuple[int, int], face_index: int | None, name: str) -> np.ndarray:
    """Transform (image -> crop) of the face to use: the largest (a warning when there are several) or `face_index`.

    Refuses no face, a face under MIN_FACE_PX wide, and a face cut off by the image border.
    """
    if not faces:
        raise InputError(f"{name}: no face found; use a photo with one clearly visible, roughly frontal face")
    if face_index is not None:
        if not 0 <= face_index < len(faces):
            raise InputError(
                f"{name}: face_index={face_index}, but {len(faces)} face(s) found; use 0 to {len(faces) - 1} (0 is the largest)"
            )
        face = faces[face_index]
    else:
        face = faces[0]
        if len(faces) > 1:
            warnings.warn(
                f"{name}: {len(faces)} faces found; using the largest (choose another with face_index= or --face-index)",
                stacklevel=3,
            )
    matrix = similarity_transform(face.anchors, ANCHOR_TARGETS)
    width = face_width(matrix)
    if width < MIN_FACE_PX:
        raise InputError(f"{name}: the face is too small ({width:.0f} px wide); use a photo where it is at least {MIN_FACE_PX} px wide")
    if outside_fraction(matrix, image_size) > MAX_OUTSIDE:
        raise InputError(f"{name}: the face is cut off by the image border; use a photo that shows the whole face")
    return matrix


def align_image(image: np.ndarray, detector: Detector | str, face_index: int | None = None, name: str = "face") -> AlignedFace:
    """Detect, choose and align one face of a photo (HxWx3 uint8 RGB; other arrays are converted).

    `detector`: a Detector, or a backend name for `get_detector`.
    """
    detector = get_detector(detector) if isinstance(detector, str) else detector
    image = to_rgb8(image, name)
    matrix = choose_face(detector.detect(image), image.shape[:2], face_index, name)
    return AlignedFace(warp_to_crop(image, matrix), matrix, image.shape[:2])


def prepare_face(
    src: str | os.PathLike | np.ndarray, detector_name: str = "litert", face_index: int | None = None
) -> tuple[np.ndarray, AlignedFace]:
    """(full RGB image, aligned face) of a photo file or array.

    The alignment is cached by content (a hash of the file's bytes, or of the array), so
    repeated calls with the same photo do not detect again. The cached crop is read-only.
    """
    if isinstance(src, np.ndarray):
        name = "the face array"
        image = read_image(src, name=name)
        key = ("array", hashlib.sha256(image.tobytes()).hexdigest(), image.shape, detector_name, face_index)
    else:
        name = str(src)
        image = read_image(src, name=name)  # checks the file first, with clear errors
        key = ("file", _file_digest(src), detector_name, face_index)
    with _CACHE_LOCK:
        cached = _FACE_CACHE.get(key)
        if cached is not None:
            _FACE_CACHE.move_to_end(key)
            return image, cached
    face = align_image(image, get_detector(detector_name), face_index, name)
    face.crop.setflags(write=False)
    face.matrix.setflags(write=False)
    with _CACHE_LOCK:
        _FACE_CACHE[key] = face
        while len(_FACE_CACHE) > FACE_CACHE_SIZE:
            _FACE_CACHE.popitem(last=False)
    return image, face


def _file_digest(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_FACE_CACHE: OrderedDict[tuple, AlignedFace] = OrderedDict()
_CACHE_LOCK = threading.Lock()


# ---------------------------------------------------------------- video


def video_matrices(anchors: list[np.ndarray | None], name: str = "pose") -> list[np.ndarray]:
    """Per-frame transforms (image -> crop) for a video, from each frame's anchors (None: no face).

    One similarity from the anchors averaged over the frames with a face; per frame, its
    translation shifted so that frame's mouth lands on the mouth target, the shift smoothed
    as b_t = 0.2 b_{t-1} + 0.8 b_t. Frames without a face take the anchors of the nearest
    frame with one (the earlier one on a tie).
    """
    found = np.array([i for i, a in enumerate(anchors) if a is not None])
    if found.size == 0:
        raise InputError(f"{name}: no face found in any frame; use a video that shows a face")
    base = similarity_transform(np.mean([anchors[i] for i in found], axis=0), ANCHOR_TARGETS)
    linear = base[:, :2]
    matrices, shift = [], None
    for i in range(len(anchors)):
        points = anchors[i] if anchors[i] is not None else anchors[found[np.argmin(np.abs(found - i))]]
        wanted = ANCHOR_TARGETS[2] - linear @ points[2]
        shift = wanted if shift is None else SHIFT_MEMORY * shift + (1 - SHIFT_MEMORY) * wanted
        matrices.append(np.column_stack([linear, shift]))
    return matrices


def track_anchors(frames: Iterable[np.ndarray], detector: Detector, name: str = "pose") -> list[np.ndarray | None]:
    """Anchors of one face per frame (None where there is none): the largest face in the first
    frame with a face, then in each frame the face nearest to the last one seen."""
    anchors: list[np.ndarray | None] = []
    last = None
    crowded = False
    for frame in frames:
        faces = detector.detect(_frame_rgb(frame, name, len(anchors)))
        if not faces:
            anchors.append(None)
            continue
        crowded |= len(faces) > 1
        if last is None:
            face = faces[0]
        else:
            face = min(faces, key=lambda f: np.linalg.norm(f.anchors - last, axis=1).mean())
        last = face.anchors
        anchors.append(face.anchors)
    if crowded:
        warnings.warn(f"{name}: several faces in the video; following the largest face of the first frame", stacklevel=3)
    return anchors


def align_frames(frames: Callable[[], Iterable[np.ndarray]], detector: Detector | str, name: str = "pose") -> Iterator[np.ndarray]:
    """Aligned 224x224 crops of a video, one per frame, streamed.

    `frames()` must return a fresh iterator of RGB frames each time it is called: it is read
    twice, once for the landmarks and once for the warp, so the video is never held whole.
    """
    detector = get_detector(detector) if isinstance(detector, str) else detector
    anchors = track_anchors(frames(), detector, name)
    matrices = video_matrices(anchors, name)
    count = 0
    for count, frame in enumerate(frames(), 1):
        if count > len(matrices):
            break
        yield warp_to_crop(_frame_rgb(frame, name, count - 1), matrices[count - 1])
    if count != len(matrices):
        raise InputError(
            f"{name}: the video gave {len(matrices)} frames, then {count} when read again; "
            "use a file that does not change while pcavs reads it"
        )


def _frame_rgb(frame: np.ndarray, name: str, index: int) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    return to_rgb8(frame, f"{name} (frame {index})")


# ---------------------------------------------------------------- back into the photo

FEATHER = 6.0  # Gaussian sigma (crop pixels) of the paste mask's edge


def face_mask(loader: bool = True) -> np.ndarray:
    """Feathered mask (224x224 float32 in [0, 1]) over the face, exactly 0 on the border.

    `loader`: for a generated face (the loader view of the crop, as the generator outputs);
    otherwise for an aligned crop.
    """
    mask = np.zeros((CROP_SIZE, CROP_SIZE), np.float32)
    # the face and jaw: brow line to below the chin, cheek to cheek, in aligned-crop pixels
    cv2.ellipse(mask, (112, 102), (66, 86), 0, 0, 360, 1.0, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), FEATHER)
    if loader:
        mask = cv2.warpAffine(mask, _crop_to_loader(), (CROP_SIZE, CROP_SIZE), flags=cv2.INTER_LINEAR)
    ramp = np.minimum(np.arange(CROP_SIZE), np.arange(CROP_SIZE)[::-1]).astype(np.float32) / (2 * FEATHER)
    ramp = np.clip(ramp, 0, 1)
    return np.clip(mask * ramp[:, None] * ramp[None, :], 0.0, 1.0)


class Paster:
    """Pastes faces (224x224 uint8 RGB) into one photo, with the inverse warp and mask computed once.

    `matrix` maps photo pixels to face pixels; `mask` is a 224x224 float mask in face pixels
    (default: `face_mask()`, for generated faces). `paste(face)` (or calling the object)
    returns a new photo; pixels the mask does not reach are the background's, exactly.
    """

    def __init__(self, background: np.ndarray, matrix: np.ndarray, mask: np.ndarray | None = None):
        self.background = background
        h, w = background.shape[:2]
        inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
        corners = transform_points(inverse, np.array([[-1, -1], [CROP_SIZE, -1], [-1, CROP_SIZE], [CROP_SIZE, CROP_SIZE]], np.float64))
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
        self.window = (slice(y0, y1), slice(x0, x1))
        self.to_window = inverse.copy()
        self.to_window[:, 2] -= (x0, y0)  # face -> window pixels
        self.size = (int(x1 - x0), int(y1 - y0))
        mask = face_mask() if mask is None else np.asarray(mask, np.float32)
        self.mask = self._warp(mask)[:, :, None] if self.size[0] > 0 and self.size[1] > 0 else None

    def _warp(self, face: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(face, self.to_window, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)

    def paste(self, face: np.ndarray) -> np.ndarray:
        out = self.background.copy()
        if self.mask is None:
            return out
        region = out[self.window].astype(np.float32)
        blended = region + self.mask * (self._warp(np.ascontiguousarray(face)).astype(np.float32) - region)
        out[self.window] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
        return out

    __call__ = paste


def paste_back(background: np.ndarray, crop: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """An aligned crop warped back into its photo (`matrix`: photo -> crop) and blended with a
    feathered face mask: a new HxWx3 uint8 image. For many frames use `Paster`."""
    return Paster(background, matrix, face_mask(loader=False)).paste(crop)
