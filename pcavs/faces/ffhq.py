"""GFPGAN's aligned 512x512 frame (facexlib's FFHQ 5-point template) and the way there and back.

A PC-AVS crop pixel maps into that frame by S, the least-squares similarity taking the crop's
anchors (align.ANCHOR_TARGETS: the eyes and the inner mouth) to the template's eyes and the
mean of its mouth corners. The frame reaches 46 crop pixels above the crop and leaves out its
bottom 44 rows, so faces are warped out of the full photo (S after the photo -> crop
similarity), never out of the 224 crop, and pasted back through the inverse with a feathered
mask that is exactly 0 outside the frame.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np

from .align import ANCHOR_TARGETS, similarity_transform, transform_points
from ..media.images import warp_affine

SIZE = 512
# facexlib's FaceRestoreHelper.face_template for face_size=512: eyes, nose, mouth corners (x, y)
TEMPLATE = np.array([
    [192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043], [313.08905, 371.15118],
])
TEMPLATE.setflags(write=False)
FILL_RGB = (132, 133, 135)  # facexlib's border colour where the frame leaves the photo
EDGE = 24  # paste mask: pixels of the frame's border that ramp from 0 to 1 ...
FEATHER = 8.0  # ... smoothed by a Gaussian of this sigma (frame pixels)


@functools.lru_cache(maxsize=1)
def crop_to_ffhq() -> np.ndarray:
    """S (2x3): PC-AVS crop pixels -> GFPGAN frame pixels (read-only)."""
    anchors = np.stack([TEMPLATE[0], TEMPLATE[1], (TEMPLATE[3] + TEMPLATE[4]) / 2])
    matrix = similarity_transform(ANCHOR_TARGETS, anchors)
    matrix.setflags(write=False)
    return matrix


def photo_to_ffhq(matrix: np.ndarray) -> np.ndarray:
    """S after `matrix` (photo -> crop): photo pixels -> GFPGAN frame pixels."""
    s, m = crop_to_ffhq(), np.asarray(matrix, np.float64)
    return np.column_stack([s[:, :2] @ m[:, :2], s[:, :2] @ m[:, 2] + s[:, 2]])


def warp_to_ffhq(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """The 512x512 GFPGAN face of `image` (HxWx3 uint8), `matrix` mapping image -> frame pixels.

    Bicubic, anti-aliased where the frame samples the image more than 2x sparser; outside the image
    facexlib's grey.
    """
    return warp_affine(image, matrix, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC, fill=FILL_RGB)


@functools.lru_cache(maxsize=1)
def ffhq_mask() -> np.ndarray:
    """Feathered paste mask over the frame (512x512 float32 in [0, 1]): 1 inside, exactly 0 on the border."""
    mask = np.zeros((SIZE, SIZE), np.float32)
    mask[EDGE:-EDGE, EDGE:-EDGE] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), FEATHER)
    mask[mask > 1 - 1e-5] = 1.0  # exactly 1 where the blur's rounding left 0.9999997
    ramp = np.clip(np.minimum(np.arange(SIZE), np.arange(SIZE)[::-1]) / EDGE, 0, 1).astype(np.float32)
    mask = np.clip(mask * ramp[:, None] * ramp[None, :], 0.0, 1.0)
    mask.setflags(write=False)
    return mask


class FfhqPaster:
    """Pastes 512x512 restored faces into frames of one size through the inverse of `matrix` (frame -> GFPGAN frame).

    The warped mask (times `weight`) is computed once. `paste(frame, face)` returns a new frame;
    pixels outside the GFPGAN frame's footprint are `frame`'s, exactly.
    """

    def __init__(self, frame_size: tuple[int, int], matrix: np.ndarray, weight: float = 1.0):
        h, w = frame_size
        inverse = cv2.invertAffineTransform(np.asarray(matrix, np.float64))
        corners = transform_points(inverse, np.array([[-1, -1], [SIZE, -1], [-1, SIZE], [SIZE, SIZE]], np.float64))
        x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [w, h])
        x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, [w, h])
        self.window = (slice(y0, y1), slice(x0, x1))
        self.size = (int(x1 - x0), int(y1 - y0))
        self.to_window = inverse.copy()
        self.to_window[:, 2] -= (x0, y0)  # GFPGAN frame -> window pixels
        self.mask = None
        if self.size[0] > 0 and self.size[1] > 0 and weight > 0:
            self.mask = (self._warp(ffhq_mask(), cv2.INTER_LINEAR) * np.float32(weight))[:, :, None]

    def _warp(self, image: np.ndarray, interpolation: int) -> np.ndarray:
        return warp_affine(image, self.to_window, self.size, interpolation=interpolation)

    def paste(self, frame: np.ndarray, face: np.ndarray) -> np.ndarray:
        out = frame.copy()
        if self.mask is None:
            return out
        region = out[self.window].astype(np.float32)
        restored = self._warp(np.ascontiguousarray(face), cv2.INTER_CUBIC).astype(np.float32)
        out[self.window] = np.clip(np.rint(region + self.mask * (restored - region)), 0, 255).astype(np.uint8)
        return out

    __call__ = paste
