"""A GFPGAN v1.4 checkpoint synthesized by the enhance kit's rule, from the manifest kept in tests/data/gfpgan.

Every tensor comes from its key and shape: a standard normal draw (torch.randn, float32) from a
fresh generator seeded with crc32(key), scaled by the first matching line of the rule below
(fan_in = prod(shape[1:]), or prod(shape[2:]) for the 5-D modulated-conv weights).
"""
from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

from support.kits import DATA

MANIFEST = DATA / "gfpgan" / "manifest.json"
FILENAME = "GFPGANv1.4.pth"


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _fan_in(shape: list[int]) -> int:
    return math.prod(shape[2:]) if len(shape) == 5 else math.prod(shape[1:])


def synth_tensor(key: str, shape: list[int]) -> torch.Tensor:
    n = torch.randn(shape, generator=torch.Generator().manual_seed(zlib.crc32(key.encode())), dtype=torch.float32)
    norm = math.sqrt(1.0 / _fan_in(shape)) if len(shape) >= 2 else None
    if ".noises.noise" in key or key.endswith("constant_input.weight"):
        return n
    if key.endswith("modulation.bias"):
        return 1.0 + 0.1 * n
    if key.endswith("modulation.weight"):
        return n * norm
    if key.endswith("modulated_conv.weight"):
        to_rgb = ".to_rgb1." in key or ".to_rgbs." in key
        return (0.1 if to_rgb else 1.0) * n * norm
    if key.startswith("stylegan_decoder.style_conv") and key.endswith(".weight") and shape == [1]:
        return 0.2 * n  # noise strength
    if key.startswith("condition_scale.") and key.endswith(".2.bias"):
        return 1.0 + 0.1 * n
    if key.endswith("bias"):
        return 0.1 * n
    if norm is None:
        raise ValueError(f"{key}: no rule for shape {shape}")
    # "condition_*.N.2.weight": the kit matches ".2." anywhere in the key, so level 2's first conv
    # (condition_*.2.0.weight) takes the 0.5 gain as well
    sft_out = key.startswith(("condition_scale.", "condition_shift.")) and ".2." in key
    return (0.5 if sft_out else 1.0) * n * norm


def synth_state_dict() -> OrderedDict[str, torch.Tensor]:
    manifest = load_manifest()
    assert not manifest["constants"], "this rule knows no constant tensors"
    return OrderedDict((key, synth_tensor(key, shape)) for key, shape, dtype in manifest["state_dict"])


def write_checkpoint(folder: Path, legacy: bool = False, container: str = "params_ema") -> Path:
    """`folder`/GFPGANv1.4.pth as the release stores it: {container: state_dict}, zip or legacy format."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILENAME
    torch.save({container: synth_state_dict()}, path, _use_new_zipfile_serialization=not legacy)
    return path
