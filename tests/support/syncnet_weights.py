"""Deterministic stand-in SyncNet weights, by the syncnet_conformance kit's stated rule (tests/data/syncnet/manifest.json).

Each tensor comes from a torch.Generator seeded with zlib.crc32 of its key:
running_mean 0.1 N(0,1); running_var 0.5 + U[0,1); 1-d weights (BatchNorm scales) 1 + 0.1 N(0,1);
1-d biases 0.1 N(0,1), but the two output biases 1 + 0.1 N(0,1); conv and linear weights
N(0,1) * sqrt(gain / fan_in) / input_scale with gain 2 (0.01 for the two output projections)
and input_scale 1 (128 for the lip tower's first conv, 24 for the audio tower's).
The file is written like the release: the legacy (pre-1.6) torch format, no BatchNorm counters.
"""
from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import torch

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "syncnet" / "manifest.json"
OUTPUT_PROJECTIONS = {"netfcaud.3.weight", "netfclip.3.weight"}
OUTPUT_BIASES = {"netfcaud.3.bias", "netfclip.3.bias"}
FIRST_CONV_SCALE = {"netcnnlip.0.weight": 128.0, "netcnnaud.0.weight": 24.0}


def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def tensor_for(key: str, shape: list[int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    noise = torch.randn(shape, generator=generator)
    if key.endswith("running_mean"):
        return 0.1 * noise
    if len(shape) == 1:
        base = 1.0 if key.endswith("weight") or key in OUTPUT_BIASES else 0.0
        return base + 0.1 * noise
    gain = 0.01 if key in OUTPUT_PROJECTIONS else 2.0
    return noise * (math.sqrt(gain / math.prod(shape[1:])) / FIRST_CONV_SCALE.get(key, 1.0))


def state_dict() -> "OrderedDict[str, torch.Tensor]":
    """Every tensor of the release file, in its saved order."""
    return OrderedDict((key, tensor_for(key, shape)) for key, shape, _ in manifest()["state_dict"])


def write(path: Path, state: dict | None = None) -> Path:
    """A syncnet_v2.model in the release's container (legacy serialization)."""
    torch.save(state_dict() if state is None else state, path, _use_new_zipfile_serialization=False)
    return path
