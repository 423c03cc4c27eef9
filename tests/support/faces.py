"""Face test media, made at test time from the conformance kit's aligned face (no pixels stored here).

The kit's `identity/000000.png` is a 224x224 crop already aligned to the spec's targets, so
its anchors are (up to how landmarks are defined) ANCHOR_TARGETS. Placing it into a canvas by
a known similarity P gives a photo whose true alignment is the inverse of P.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from support.kits import INPUTS

IDENTITY = INPUTS / "identity" / "000000.png"
CROP_CORNERS = np.array([[0, 0], [224, 0], [0, 224], [224, 224]], np.float64)


@functools.lru_cache(maxsize=1)
def identity_crop() -> np.ndarray:
    """The kit's aligned face, 224x224x3 uint8 RGB (read-only)."""
    bgr = cv2.imread(str(IDENTITY), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {IDENTITY}"
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    rgb.setflags(write=False)
    return rgb


def placement(scale: float, degrees: float, offset: tuple[float, float]) -> np.ndarray:
    """2x3, crop -> canvas: turn by `degrees` (counter-clockwise on screen) and scale about the crop centre, then move by `offset`."""
    matrix = cv2.getRotationMatrix2D((111.5, 111.5), degrees, scale)
    matrix[:, 2] += offset
    return matrix


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return np.asarray(points, np.float64) @ matrix[:, :2].T + matrix[:, 2]


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """2x3 affine `outer` after `inner`."""
    return np.column_stack([outer[:, :2] @ inner[:, :2], outer[:, :2] @ inner[:, 2] + outer[:, 2]])


def place_face(canvas: tuple[int, int] | np.ndarray, matrix: np.ndarray, background: int = 90) -> np.ndarray:
    """The kit's face warped by `matrix` (crop -> canvas) into a canvas: a (height, width) of flat
    grey `background`, or a copy of a given image. Only the crop's own square is drawn."""
    if isinstance(canvas, np.ndarray):
        out = canvas.copy()
    else:
        out = np.full((*canvas, 3), background, np.uint8)
    h, w = out.shape[:2]
    corners = apply(matrix, CROP_CORNERS)
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int) - 1, 0, [w, h])
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 2, 0, [w, h])
    if x1 <= x0 or y1 <= y0:
        return out
    local = matrix.copy()
    local[:, 2] -= (x0, y0)
    size = (int(x1 - x0), int(y1 - y0))
    face = cv2.warpAffine(identity_crop(), local, size, flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.full((224, 224), 255, np.uint8), local, size, flags=cv2.INTER_LINEAR) > 127
    np.copyto(out[y0:y1, x0:x1], face, where=inside[:, :, None])
    return out


def fitted(scale: float, degrees: float, margin: tuple[int, int] = (60, 40)) -> tuple[np.ndarray, np.ndarray]:
    """(canvas, crop -> canvas matrix): the face placed so the whole turned crop fits, with a margin (x, y) around it."""
    matrix = placement(scale, degrees, (0, 0))
    corners = apply(matrix, CROP_CORNERS)
    matrix[:, 2] += np.array(margin) - corners.min(0)
    width, height = np.ceil(np.ptp(corners, axis=0) + 2 * np.array(margin)).astype(int)
    return place_face((int(height), int(width)), matrix), matrix


def two_faces() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(canvas, larger face's matrix, smaller face's matrix): two people side by side."""
    big = placement(1.4, 4.0, (30, 40))
    small = placement(0.9, -6.0, (420, 110))
    canvas = place_face(place_face((420, 680), big), small)
    return canvas, big, small
