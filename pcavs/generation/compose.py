"""Output frames for each mode: the face crop, the face pasted back into the photo, or a labelled grid."""
from __future__ import annotations

from typing import Protocol

import cv2
import numpy as np

from ..core.facts import CROP_SIZE
from ..faces.align import Paster, crop_to_generated, loader_view
from ..faces.sources import Identity

LABEL_HEIGHT = 24
MAX_SIDE = 3840  # full mode: bigger photos are shown downscaled to 4K, which players and H.264 levels handle
GRID_LABELS = ("reference", "generated", "pose")


def even_size(image: np.ndarray) -> np.ndarray:
    """Pad odd heights/widths by one replicated edge pixel (H.264 needs even sizes; never stretch)."""
    pad_h, pad_w = image.shape[0] % 2, image.shape[1] % 2
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return image


def fit_4k(image: np.ndarray, matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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


def frame_size(mode: str, side: int, panels: int, photo: np.ndarray | None) -> tuple[int, int]:
    """(width, height) of a mode's frames: one square face of `side` pixels (crop), `panels` of them under the
    label bar (grid), or the photo padded to even sizes (full)."""
    if mode == "crop":
        return side, side
    if mode == "grid":
        return panels * side, side + LABEL_HEIGHT
    height, width = photo.shape[:2]
    return width + width % 2, height + height % 2


def labelled(panels: list[np.ndarray], labels: tuple[str, ...]) -> np.ndarray:
    """Square panels of one size side by side, under a black bar with one white label per panel."""
    row = np.concatenate(panels, axis=1)
    bar = np.zeros((LABEL_HEIGHT, row.shape[1], 3), np.uint8)
    for i, text in enumerate(labels):
        x = i * panels[0].shape[1] + 8
        cv2.putText(bar, text, (x, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, row], axis=0)


class Finisher(Protocol):
    """What turns a job's generated faces into its output frames: `Composer`, or `EnhanceStage` (GFPGAN)."""

    stage: str  # its name in `Pipeline.profile()`

    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""

    def finish(self, faces: np.ndarray, poses: np.ndarray | None) -> list[np.ndarray]:
        """The output frames of a batch of generated faces (B, 224, 224, 3) uint8 RGB, in order; `poses`:
        the aligned pose frame that drove each face (B, 224, 224, 3), or None (the photo's own pose, or not kept)."""

    def skip(self, count: int) -> None:
        """Faces that will not be finished (real-time mode dropped them): keep in step as if they were."""


class Composer:
    """Builds the output frames of the generated faces as the mode says (a `Finisher`)."""

    stage = "compose"

    def __init__(self, mode: str, identity: Identity):
        self.mode = mode
        self.identity = identity
        if mode == "full":
            self.paster = Paster(*fit_4k(identity.image, crop_to_generated(identity.face.matrix)))
        self.reference = loader_view(identity.face.crop)

    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return frame_size(self.mode, CROP_SIZE, len(GRID_LABELS), self.paster.background if self.mode == "full" else None)

    def finish(self, faces: np.ndarray, poses: np.ndarray | None) -> list[np.ndarray]:
        """The output frames of a batch of generated faces; `poses` (the aligned pose frames) show in the grid."""
        return [self(face, None if poses is None else poses[k]) for k, face in enumerate(faces)]

    def __call__(self, face: np.ndarray, pose: np.ndarray | None) -> np.ndarray:
        """The output frame of one generated face; `pose`: the aligned pose frame the grid shows (None: the photo)."""
        if self.mode == "crop":
            return face
        if self.mode == "full":
            return even_size(self.paster(face))
        pose_panel = loader_view(pose) if pose is not None else self.reference
        return labelled([self.reference, face, pose_panel], GRID_LABELS)

    def skip(self, count: int) -> None:
        """Nothing to keep in step: each frame is composed on its own."""
