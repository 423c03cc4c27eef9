"""Between pictures and network tensors: uint8 RGB (N, H, W, 3) and float (N, 3, H, W) in [-1, 1].

One rounding for every network output: clamp to [-1, 1], map to [0, 255] as (x + 1) / 2 * 255, round half
to even.
The reference PC-AVS truncates instead (`astype(uint8)`), which makes every frame half a grey
level darker on average; GFPGAN's own code rounds. Rounded frames stay within one level of the
reference's truncated ones (tests/models/test_conformance.py checks both).
"""
from __future__ import annotations

import numpy as np
import torch


def to_tensor(images: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(N, H, W, 3) uint8 RGB -> (N, 3, H, W) in [-1, 1] on `device` as `dtype`."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float()
    return (tensor / 127.5 - 1.0).to(dtype)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) network output in [-1, 1] -> (N, H, W, 3) uint8 RGB on the CPU."""
    scaled = ((images.float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).round_()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
