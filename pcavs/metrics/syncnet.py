"""SyncNet (Chung & Zisserman 2016) as joonson/syncnet_python's `syncnet_v2.model` defines it: the network,
and loading its weights strictly by name.

Two towers map 0.2 s of video and of audio to 1024-d embeddings:
- lip tower: five 224x224 BGR frames, pixels 0-255 unnormalised, as (B, 3, 5, 224, 224);
- audio tower: 20 MFCC steps of 13 coefficients (see mfcc.py), as (B, 1, 13, 20).
The module indices inside each `nn.Sequential` are those of the released file's keys.
The weights are never bundled: the first use (or `pcavs download syncnet`) fetches them into the user cache
and checks them against their published SHA-256 (models/registry.py).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..models.checkpoint import build, check_state_dict, expected_keys, read_state_dict
from ..models.registry import SYNCNET as WEIGHTS

FILENAME = WEIGHTS.files[0]
HINT = WEIGHTS.hint
EMBEDDING = 1024
WINDOW = 5  # frames the lip tower sees
BN_EPS = 1e-5


def _bn3(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels, eps=BN_EPS)


def _bn2(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


def _head() -> nn.Sequential:
    """512 -> 512 -> 1024, keys 0 (linear), 1 (BatchNorm1d), 3 (linear)."""
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512, eps=BN_EPS), nn.ReLU(), nn.Linear(512, EMBEDDING))


class SyncNet(nn.Module):
    """The two towers; `lip(frames)` and `audio(mfcc)` give (B, 1024) float32 embeddings, unnormalised."""

    def __init__(self):
        super().__init__()
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), _bn3(96), nn.ReLU(),  # 0-2
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 3
            nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), _bn3(256), nn.ReLU(),  # 4-6
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),  # 7
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), _bn3(256), nn.ReLU(),  # 8-10
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), _bn3(256), nn.ReLU(),  # 11-13
            nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), _bn3(256), nn.ReLU(),  # 14-16
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),  # 17
            nn.Conv3d(256, 512, (1, 6, 6)), _bn3(512), nn.ReLU(),  # 18-20
        )
        self.netfclip = _head()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, 3, padding=1), _bn2(64), nn.ReLU(),  # 0-2
            nn.MaxPool2d(1, stride=1),  # 3: the identity, kept for the indices
            nn.Conv2d(64, 192, 3, padding=1), _bn2(192), nn.ReLU(),  # 4-6
            nn.MaxPool2d(3, stride=(1, 2)),  # 7
            nn.Conv2d(192, 384, 3, padding=1), _bn2(384), nn.ReLU(),  # 8-10
            nn.Conv2d(384, 256, 3, padding=1), _bn2(256), nn.ReLU(),  # 11-13
            nn.Conv2d(256, 256, 3, padding=1), _bn2(256), nn.ReLU(),  # 14-16
            nn.MaxPool2d(3, stride=2),  # 17
            nn.Conv2d(256, 512, (5, 4)), _bn2(512), nn.ReLU(),  # 18-20
        )
        self.netfcaud = _head()

    def lip(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR 0-255 -> (B, 1024)."""
        if self.training or frames.shape[2] != WINDOW:
            return self.netfclip(self.netcnnlip(frames).flatten(1))
        # the first conv spans the 5 frames, so every later layer sees one frame: the tower is 2-d convolutions
        # with (time, channel) folded into the first one's input channels (see _fused)
        layers = self._fused("lip")
        return self.netfclip(_run_fused(layers, frames.flatten(1, 2)).flatten(1))

    def audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC -> (B, 1024)."""
        if self.training:
            return self.netfcaud(self.netcnnaud(mfcc).flatten(1))
        return self.netfcaud(_run_fused(self._fused("audio"), mfcc).flatten(1))

    def _fused(self, tower: str) -> list:
        """The tower at eval as 2-d steps, each BatchNorm folded into the conv before it (in float64, then cast
        back); rebuilt whenever a parameter or buffer changed (loading, .to(), in-place edits)."""
        sequential = self.netcnnlip if tower == "lip" else self.netcnnaud
        tensors = [*sequential.parameters(), *sequential.buffers()]
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors)
        cached = self.__dict__.setdefault("_fused_cache", {}).get(tower)
        if cached is not None and cached[0] == key:
            return cached[1]
        layers, modules = [], list(sequential)
        for i, module in enumerate(modules):
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                bn = modules[i + 1]
                scale = bn.weight.double() * torch.rsqrt(bn.running_var.double() + bn.eps)
                weight = module.weight.double() * scale.view(-1, *[1] * (module.weight.dim() - 1))
                bias = (module.bias.double() - bn.running_mean.double()) * scale + bn.bias.double()
                if isinstance(module, nn.Conv3d):  # (O, I, T, k, k): T folded into I (the first), else T == 1
                    weight = weight.flatten(1, 2)
                    stride, padding = module.stride[1:], module.padding[1:]
                else:
                    stride, padding = module.stride, module.padding
                weight = weight.to(module.weight.dtype).contiguous(memory_format=torch.channels_last)
                layers.append(("conv", weight, bias.to(module.weight.dtype),
                               tuple(stride), tuple(padding)))
            elif isinstance(module, (nn.MaxPool2d, nn.MaxPool3d)):
                kernel, stride, padding = (_pair(module.kernel_size), _pair(module.stride), _pair(module.padding))
                if kernel != (1, 1):
                    layers.append(("pool", kernel, stride, padding))
            elif isinstance(module, nn.ReLU):
                layers.append(("relu",))
        self.__dict__["_fused_cache"][tower] = (key, layers)
        return layers


def _pair(value) -> tuple[int, int]:
    """A pooling size as (h, w): an int for both, or the last two of a 3-d one (whose time size is 1)."""
    return (value, value) if isinstance(value, int) else tuple(value[-2:])


def _run_fused(layers: list, x: torch.Tensor) -> torch.Tensor:
    """The folded tower, channels-last (oneDNN's native layout: the max pools alone took 28 % of the lip tower
    in NCHW, and each conv reordered its input and output)."""
    x = x.contiguous(memory_format=torch.channels_last)
    for layer in layers:
        if layer[0] == "conv":
            x = F.conv2d(x, layer[1], layer[2], stride=layer[3], padding=layer[4])
        elif layer[0] == "pool":
            x = F.max_pool2d(x, layer[1], stride=layer[2], padding=layer[3])
        else:
            x = F.relu_(x)
    return x


def _optional(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # BatchNorm's training counters: the release leaves them out


def load_syncnet(path: str | os.PathLike, label: str | None = None) -> SyncNet:
    """SyncNet in eval mode on the CPU, float32, from a `syncnet_v2.model` file (checked strictly by name).

    Loaded as the official code does: by name, with map_location="cpu", and with weights_only=True;
    the BatchNorm counters may be present or not. Errors name `label` (default: the path).
    """
    label = label or str(path)
    state = read_state_dict(path, label, HINT)
    check_state_dict(state, expected_keys(SyncNet), label, f"SyncNet {FILENAME}", HINT, optional=_optional)
    return build(SyncNet, state)


def default_path() -> Path:
    """Where `pcavs download syncnet` puts the file: the user cache."""
    return WEIGHTS.default_path()
