"""Deterministic PC-AVS checkpoints from the manifest in tests/data/pcavs (the conformance kit's rule).

Every tensor is derived from its network, key and shape, seeded with crc32("{net}/{key}"):
int64 counters are zeros; the manifest's constants are used as they are; running means are
0.1·N(0,1) and running variances 0.5 + U[0,1). In the generator, modulation biases are
1 + 0.1·N(0,1), the ToRGB convolution weights, every other bias and the noise weights
0.1·N(0,1), and everything else N(0,1). In the encoders, tensors of two or more dimensions are
N(0,1)·sqrt(1/fan_in) (fan_in = product of all but the first dimension), 1-d weights
1 + 0.1·N(0,1) and 1-d biases 0.1·N(0,1). The golden outputs were computed on exactly these
tensors, so matching them shows the released checkpoint will load and run the same way.
"""
from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import torch

MANIFEST = Path(__file__).resolve().parents[1] / "data" / "pcavs" / "manifest.json"
NETS = ("G", "V", "E", "A_sync")


def load_manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def _tensor(net: str, key: str, shape: list[int], dtype: str, constants: dict) -> torch.Tensor:
    if dtype == "int64":
        return torch.zeros(shape, dtype=torch.int64)
    if key in constants:
        return torch.tensor(constants[key], dtype=torch.float32).reshape(shape)
    generator = torch.Generator().manual_seed(zlib.crc32(f"{net}/{key}".encode()))
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator, dtype=torch.float32)
    normal = torch.randn(shape, generator=generator, dtype=torch.float32)
    if key.endswith("running_mean"):
        return 0.1 * normal
    if net == "G":
        if key.endswith("modulation.bias"):
            return 1.0 + 0.1 * normal
        to_rgb = key.startswith(("to_rgb1.", "to_rgbs.")) and key.endswith("conv.weight")
        if to_rgb or key.endswith("bias") or key.endswith("noise.weight"):
            return 0.1 * normal
        return normal
    if len(shape) >= 2:
        return normal * math.sqrt(1.0 / math.prod(shape[1:]))
    return 1.0 + 0.1 * normal if key.endswith("weight") else 0.1 * normal


def synth_state_dict(net: str, manifest: dict | None = None) -> dict[str, torch.Tensor]:
    """The synthesized state dict of one network, keys in the checkpoint's order."""
    manifest = manifest or load_manifest()
    constants = manifest.get("constants", {}).get(net, {})
    return {key: _tensor(net, key, shape, dtype, constants) for key, shape, dtype in manifest["state_dicts"][net]}


def write_checkpoints(folder: Path) -> Path:
    """latest_net_{G,V,E,A_sync}.pth in `folder`, as the released demo/ holds them."""
    manifest = load_manifest()
    folder.mkdir(parents=True, exist_ok=True)
    for net in NETS:
        torch.save(synth_state_dict(net, manifest), folder / f"latest_net_{net}.pth")
    return folder
