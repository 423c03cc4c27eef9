"""Output frames for each mode: the face crop, the face pasted back into the photo, or a labelled grid."""
from __future__ import annotations

import cv2
import numpy as np

from .align import CROP_SIZE, Paster, crop_to_generated, loader_view
from .sources import Identity
LABEL_HEIGHT = 24
MAX_SIDE = 3840  # full mode: bigger photos are shown downscaled to 4K, which players and H.264 levels handle
GRID_LABELS = ("reference", "generated", "pose")


def even_size(image: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one replicated edge pixel (H.264 needs even sizes; never stretch)."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return image


def _fit_4k(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo downscaled to at most MAX_SIDE, and `matrix` (photo -> face) for the smaller photo."""
    height, width = image.shape[:2]
    scale = MAX_SIDE / max(height, width)
    if scale >= 1:
        return image, matrix
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    smaller = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    # pixel centres: x_small + 0.5 = (x + 0.5) * size / width
    sx, sy = size[0] / width, size[1] / height
    to_small = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return smaller, matrix @ np.linalg.inv(to_small)


class Composer:
    """Builds the output frame for one generated face."""

    def __init__(self, mode: str, identity: Identity):
        self.mode = mode
        self.identity = identity
        if mode == "full":
            self.paster = Paster(*_fit_4k(identity.image, crop_to_generated(identity.face.matrix)))
        self.reference = loader_view(identity.face.crop)

    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        if self.mode == "crop":
            return CROP_SIZE, CROP_SIZE
        if self.mode == "grid":
            return 3 * CROP_SIZE, CROP_SIZE + LABEL_HEIGHT
        height, width = self.paster.background.shape[:2]
        return width + width % 2, height + height % 2

    def __call__(self, face: np.ndarray, pose_crop: np.ndarray | None) -> np.ndarray:
        if self.mode == "crop":
            return face
        if self.mode == "full":
            return even_size(self.paster(face))
        pose_panel = loader_view(pose_crop) if pose_crop is not None else self.reference
        panels = np.concatenate([self.reference, face, pose_panel], axis=1)
        labels = np.zeros((LABEL_HEIGHT, panels.shape[1], 3), np.uint8)
        for i, text in enumerate(GRID_LABELS):
            cv2.putText(labels, text, (i * CROP_SIZE + 8, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        return np.concatenate([labels, panels], axis=0)
