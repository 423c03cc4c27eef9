"""The enhance step of a job (`enhance="gfpgan"`): a batch of generated faces -> restored output frames.

Each generated 224 face is first composed into the photo as `full` mode does. GFPGAN's 512
frame is warped out of that composed photo (S after the photo -> crop similarity), so the
photo's own pixels reach the restorer at their resolution, never through the 224 crop. The
faces are restored in a batch, optionally smoothed over time, blended with the unrestored face
by `enhance_weight`, and turned into the mode's frame: `full` pastes the face back into the
photo through the inverse warp with a feathered mask; `crop` is the 512x512 face; `grid` shows
the unrestored and the restored face side by side.
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.options import Options
from ..faces.align import Paster, crop_to_generated
from ..faces.ffhq import SIZE, FfhqPaster, photo_to_ffhq, warp_to_ffhq
from ..faces.sources import Identity
from ..restore.restorer import Restorer
from .compose import even_size, fit_4k, frame_size, labelled

GRID_LABELS = ("generated", "restored (GFPGAN v1.4)")


class ResidualSmoother:
    """Exponential moving average over frames of the restored detail (restored - unrestored face):
    d_t = m d_(t-1) + (1 - m) (restored_t - unrestored_t); the frame shows unrestored_t + d_t."""

    def __init__(self, memory: float):
        self.memory = memory
        self.detail: np.ndarray | None = None

    def __call__(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        detail = after.astype(np.float32) - before
        self.detail = detail if self.detail is None else self.memory * self.detail + (1 - self.memory) * detail
        return np.clip(np.rint(before + self.detail), 0, 255).astype(np.uint8)


class EnhanceStage:
    """Restores the faces of one job into its output frames (a `Finisher`)."""

    stage = "enhance"

    def __init__(self, restorer: Restorer, identity: Identity, options: Options):
        self.restorer = restorer
        self.mode = options.mode
        self.weight = options.enhance_weight
        self.noise = options.noise
        self.generator = torch.Generator().manual_seed(options.seed) if options.seed is not None else None
        self.smoother = ResidualSmoother(options.enhance_smooth) if options.enhance_smooth > 0 else None
        photo, to_crop = fit_4k(identity.image, identity.face.matrix)  # as shown in full mode (at most 4K)
        self.paster = Paster(photo, crop_to_generated(to_crop))
        self.to_ffhq = photo_to_ffhq(to_crop)
        self.back = FfhqPaster(photo.shape[:2], self.to_ffhq, self.weight) if self.mode == "full" else None

    def size(self) -> tuple[int, int]:
        """(width, height) of the output frames."""
        return frame_size(self.mode, SIZE, len(GRID_LABELS), self.paster.background)

    def finish(self, faces: np.ndarray, poses: np.ndarray | None) -> list[np.ndarray]:
        """Output frames for generated faces (B, 224, 224, 3) uint8 RGB, in order (the grid shows no pose frames)."""
        composed = [self.paster(face) for face in faces]
        before = np.stack([warp_to_ffhq(frame, self.to_ffhq) for frame in composed])
        if self.weight == 0:  # nothing of the restored face is shown
            after = before
        else:
            after = self.restorer(before, noise=self.noise, seed=self.generator)
        if self.smoother is not None:
            after = np.stack([self.smoother(b, a) for b, a in zip(before, after)])
        if self.back is not None:
            return [even_size(self.back(frame, face)) for frame, face in zip(composed, after)]
        shown = self._blend(before, after)
        if self.mode == "crop":
            return list(shown)
        return [labelled([b, s], GRID_LABELS) for b, s in zip(before, shown)]

    def skip(self, count: int) -> None:
        """Faces that will not be restored (real-time mode dropped them): their random noise is drawn all the same."""
        if self.noise == "random":
            for _ in range(count):
                self.restorer.net.random_noise(1, self.generator)

    def _blend(self, before: np.ndarray, after: np.ndarray) -> np.ndarray:
        if self.weight == 1:
            return after
        mixed = before + np.float32(self.weight) * (after.astype(np.float32) - before)
        return np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
