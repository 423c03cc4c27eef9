"""`Avatar`: a face, and its head motion, prepared once (`Pipeline.prepare`) for any number of voices."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..core.options import Options
from ..faces.sources import Identity


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
    pose_codes: torch.Tensor | None  # (N, P) one per pose frame; None: the photo's own pose
    pose_crops: np.ndarray | None  # (N, 224, 224, 3) the aligned pose frames, kept for mode="grid"
    options: Options  # what it was prepared with (aligned, detector, face_index, mode)

