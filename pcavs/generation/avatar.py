"""`Avatar`: a face, and its head motion, prepared once (`Pipeline.prepare`) for any number of voices; and
`PoseCodes`, the head-pose codes of a pose source, encoded as the frames reach them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from ..core.errors import InputError
from ..core.facts import CROP_SIZE
from ..core.options import Options
from ..faces.sources import Identity


def loop_index(frames: np.ndarray, length: int, mode: str) -> np.ndarray:
    """Which source frame drives each output frame: ping-pong (0..n-1, n-1..0, ...), loop, or hold the last."""
    if mode == "loop":
        return frames % length
    if mode == "hold":
        return np.minimum(frames, length - 1)
    phase = frames % (2 * length)
    return np.where(phase < length, phase, 2 * length - 1 - phase)


class PoseCodes:
    """The head-pose code of each frame of a pose source (and its aligned crop, when kept for the grid), read,
    aligned and encoded `batch_size` frames at a time, as the frames that use them are made.

    Frames below the count read so far drive the output frames of the same index, whatever the loop mode,
    so the source is read to its end only when an output frame lies past it.
    """

    def __init__(self, crops: Iterator[np.ndarray], encode: Callable[[np.ndarray], torch.Tensor], batch_size: int,
                 keep_crops: bool, name: str):
        """`crops`: the source's aligned frames; `encode`: E's head-pose codes of a batch of them; `name`: the
        source, for the error when it holds no frame."""
        self._crops = crops
        self._encode = encode
        self._batch_size = batch_size
        self._name = name
        self.codes: torch.Tensor | None = None  # (N, P) of the N frames read so far
        self.crops: np.ndarray | None = np.zeros((0, CROP_SIZE, CROP_SIZE, 3), np.uint8) if keep_crops else None
        self.complete = False  # the source read to its end

    def __len__(self) -> int:
        """Frames read so far."""
        return 0 if self.codes is None else len(self.codes)

    def read(self) -> None:
        """The next batch of frames, read and encoded; at the end of the source, `complete`."""
        batch = [crop for _, crop in zip(range(self._batch_size), self._crops)]
        if len(batch) < self._batch_size:
            self.complete = True
        if not batch:
            if self.codes is None:
                raise InputError(f"pose: {self._name}: holds no frames; give a video, a folder of frames or an image")
            return
        crops = np.stack(batch)
        codes = self._encode(crops)
        self.codes = codes if self.codes is None else torch.cat([self.codes, codes])
        if self.crops is not None:
            self.crops = np.concatenate([self.crops, crops])

    def read_all(self) -> "PoseCodes":
        """Every frame of the source read and encoded (for an avatar)."""
        while not self.complete:
            self.read()
        return self

    def pick(self, frames: np.ndarray, loop: str) -> np.ndarray:
        """Which pose frame drives each of `frames` (output frame indices), reading as far as they need."""
        last = int(frames.max())
        while last >= len(self) and not self.complete:
            self.read()
        return frames if last < len(self) else loop_index(frames, len(self), loop)


@dataclass(frozen=True)
class Avatar:
    """What a job needs from the photo and the pose source, made once: the aligned photos, the identity
    codes (V's spatial map and pooled code, the photo's own head pose) and the head-pose codes of every
    pose frame. `Pipeline.run`, `__call__` and `stream` take it in place of `face`; a `pose` given to
    them then replaces the avatar's own.
    """

    identities: list[Identity]
    spatial: torch.Tensor  # (1, C, h, w) V's spatial identity map, averaged over the photos
    pooled: torch.Tensor  # (1, D) the pooled identity code
    reference_pose: torch.Tensor  # (1, P) the photos' own head-pose code
    pose: PoseCodes | None  # the pose frames' codes (all of them in a prepared avatar); None: the photo's own pose
    options: Options  # what it was prepared with (aligned, detector, face_index, mode)

    @property
    def pose_codes(self) -> torch.Tensor | None:
        """(N, P) one head-pose code per pose frame; None: the photo's own pose."""
        return None if self.pose is None else self.pose.read_all().codes

    @property
    def pose_crops(self) -> np.ndarray | None:
        """(N, 224, 224, 3) the aligned pose frames, kept for mode="grid"."""
        return None if self.pose is None else self.pose.read_all().crops
