"""GFPGAN v1.4's weights: finding (or installing) them through the registry, and loading them strictly.

The released `GFPGANv1.4.pth` (TencentARC/GFPGAN, release v1.3.0; Apache-2.0 code, weights
trained on FFHQ; its address, SHA-256 and size: models/registry.py) is downloaded on first use
or by `pcavs download gfpgan`, never shipped. It is a dict
`{"params_ema": state_dict}` (or `"params"`), zip or legacy torch format; it is read with
`weights_only=True`, every key and shape is checked against the network, and the tensors
restoration never reads are dropped. Faces are 512x512 RGB in GFPGAN's aligned (FFHQ) frame.
"""
from __future__ import annotations

import gc
import os
from pathlib import Path

from ..models import checkpoint
from ..models.download import ensure
from ..models.registry import GFPGAN as WEIGHTS
from .gfpgan import GFPGAN, unused_shapes

CONTAINER_KEYS = ("params_ema", "params")  # GFPGAN's loader prefers the EMA weights
DOWNLOAD_HINT = WEIGHTS.hint


def ensure_checkpoint(checkpoint: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """GFPGANv1.4.pth from `checkpoint` (a file or its folder), else $PCAVS_GFPGAN, else the user cache, downloaded
    there on first use (see models.download.ensure)."""
    return ensure(WEIGHTS.name, checkpoint, progress)


def read_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict:
    """The state dict inside a GFPGAN checkpoint (`params_ema`, else `params`), read safely."""
    return checkpoint.read_state_dict(path, label or str(path), DOWNLOAD_HINT, inside=CONTAINER_KEYS)


def check_state_dict(state: dict, label: str) -> None:
    """Strict key and shape check against GFPGAN v1.4 plus the tensors restoration never reads."""
    expected = checkpoint.expected_keys(GFPGAN, unused_shapes())
    checkpoint.check_state_dict(state, expected, label, "GFPGAN v1.4", DOWNLOAD_HINT)


def load_gfpgan(path: str | os.PathLike, label: str | None = None) -> GFPGAN:
    """The network from a checkpoint file (on the CPU, float32, eval mode), holding only what restoration reads."""
    state = read_checkpoint(path, label)
    check_state_dict(state, label or str(path))
    return checkpoint.build(GFPGAN, state)


def verify_checkpoint(path: Path, label: str | None = None) -> None:
    """Raise WeightsError (naming `label`, default the path) unless `path` loads as GFPGAN v1.4:
    the check a download must pass before it is installed."""
    load_gfpgan(path, label)
    gc.collect()  # let go of the memory-mapped file before it is renamed (Windows)


