"""`Restorer`: GFPGAN v1.4 loaded once, restoring 512x512 faces in GFPGAN's aligned (FFHQ) frame."""
from __future__ import annotations

import os

import numpy as np
import torch

from ..core.devices import ShrinkingBatches, resolve_device, resolve_dtype, reuse_freed_memory
from ..core.errors import InputError
from ..core.options import NOISE_MODES
from ..models.pixels import to_tensor, to_uint8
from .gfpgan import GFPGAN, SIZE
from .weights import ensure_checkpoint, load_gfpgan


def check_faces(faces: np.ndarray) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (SIZE, SIZE, 3):
        raise InputError(f"faces: expected (N, {SIZE}, {SIZE}, 3) uint8 RGB, got {faces.dtype} {faces.shape}")
    return faces


class Restorer:
    """GFPGAN v1.4 loaded once; `restorer(faces)` restores (N, 512, 512, 3) uint8 RGB aligned faces."""

    def __init__(self, net: GFPGAN, device: torch.device, dtype: torch.dtype = torch.float32):
        self.device = device
        self.dtype = dtype
        if device.type == "cpu":
            reuse_freed_memory()
        self.net = net.to(device=device, dtype=dtype)
        self.batches = ShrinkingBatches(device, "GFPGAN", "face")

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None
    ) -> "Restorer":
        """Load GFPGANv1.4.pth from `path` (a file or its folder), else $PCAVS_GFPGAN, else the user cache
        (downloading it there first when it is nowhere)."""
        resolved = resolve_device(device)
        return cls(load_gfpgan(ensure_checkpoint(path)), resolved, resolve_dtype(dtype, resolved))

    def default_batch_size(self) -> int:
        return 8 if self.device.type != "cpu" else 1

    @torch.inference_mode()
    def __call__(
        self,
        faces: np.ndarray,
        *,
        noise: str = "fixed",
        seed: int | torch.Generator | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Restored faces, same shape. noise="fixed" uses the checkpoint's noise maps (deterministic);
        "random" draws fresh maps per face, from `seed` (an int, or a torch.Generator to continue)."""
        faces = check_faces(faces)
        if noise not in NOISE_MODES:
            raise InputError(f"noise: {noise!r} is not one of {', '.join(NOISE_MODES)}")
        generator = seed if isinstance(seed, torch.Generator) or seed is None else torch.Generator().manual_seed(seed)
        drawn: dict[int, list[torch.Tensor]] = {}  # random maps by face, drawn in face order (batching never changes them)

        def maps(start: int, stop: int) -> list[torch.Tensor] | None:
            if noise == "fixed":
                return None
            for index in range(start, stop):
                if index not in drawn:
                    drawn[index] = [m.to(self.dtype) for m in self.net.random_noise(1, generator)]
            return [torch.cat(layer) for layer in zip(*(drawn[index] for index in range(start, stop)))]

        def restore(start: int, stop: int) -> np.ndarray:
            restored = to_uint8(self.net(to_tensor(faces[start:stop], self.device, self.dtype), maps(start, stop)))
            for index in range(start, stop):  # kept until their faces are restored: a retry reuses them
                drawn.pop(index, None)
            return restored

        restored = self.batches(restore, len(faces), batch_size or self.default_batch_size())
        return np.concatenate(restored) if restored else faces.copy()
