"""Checkpoint files, read one safe way for every model (PC-AVS, GFPGAN, SyncNet).

A file is read with `torch.load(..., weights_only=True)` (zip checkpoints memory-mapped, legacy
pickles read whole), so no code in it ever runs; then every key of it is checked, name and
shape, against the network before anything is loaded. Every failure is one WeightsError naming
the file and saying what to do.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from ..core.errors import WeightsError

Expected = Mapping[str, tuple[tuple[int, ...], bool]]  # key -> (shape, holds floats)
BLOCK = 1 << 20  # bytes read at a time when hashing


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, as lowercase hex (read in blocks: any size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


def read_state_dict(path: str | os.PathLike, label: str, hint: str, inside: Sequence[str] = ()) -> dict[str, torch.Tensor]:
    """The state dict of a checkpoint file (errors name `label` and end with `hint`, what to do).

    `inside`: the file holds a dict with the state dict under the first of these keys that it has
    (GFPGAN's `params_ema`, else `params`).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{label}: file not found; {hint}")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a pickle of protocol 2 or later
        raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {hint}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        text = str(exc).strip()
        why = text.splitlines()[0] if text else "unpickling failed"
        if "weights only" in text.lower() or "weights_only" in text.lower():
            why = "it holds objects that safe loading (weights_only=True) refuses; pcavs never loads them unsafely"
        raise WeightsError(f"{label}: cannot be loaded: {why}; {hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
        raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {hint}") from None
    if inside:
        key = next((k for k in inside if isinstance(loaded, dict) and k in loaded), None)
        if key is None:
            raise WeightsError(f"{label}: holds no {' or '.join(map(repr, inside))} state dict; {hint}")
        loaded = loaded[key]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise WeightsError(f"{label}: not a state dict of tensors; {hint}")
    return loaded


def expected_keys(network: Callable[[], nn.Module], unused: Mapping[str, tuple[int, ...]] = {}) -> Expected:
    """Every key a checkpoint of `network()` holds: the network's own (built on the meta device, costing
    nothing) and the float tensors of the released file that inference never reads."""
    with torch.device("meta"):
        own = network().state_dict()
    expected = {key: (tuple(tensor.shape), tensor.is_floating_point()) for key, tensor in own.items()}
    expected.update({key: (tuple(shape), True) for key, shape in unused.items()})
    return expected


def check_state_dict(state: Mapping[str, torch.Tensor], expected: Expected, label: str, model: str, hint: str,
                     optional: Callable[[str], bool] = lambda key: False) -> None:
    """Every key of `state` is one of `expected` with its shape (and floats where floats belong), and every
    expected key but the `optional` ones is there. `model` names what the file should be ("PC-AVS G")."""
    wrong = f"not a {model} checkpoint; {hint}"
    missing = [key for key in expected if key not in state and not optional(key)]
    if missing:
        raise WeightsError(f"{label}: missing key {missing[0]!r} ({len(missing)} missing): {wrong}")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise WeightsError(f"{label}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected): {wrong}")
    for key, tensor in state.items():
        shape, floats = expected[key]
        if tuple(tensor.shape) != shape:
            raise WeightsError(f"{label}: key {key!r} has shape {tuple(tensor.shape)}, expected {shape}: {wrong}")
        if floats and not tensor.is_floating_point():
            raise WeightsError(f"{label}: key {key!r} holds {tensor.dtype}, not floats: {wrong}")


def build(network: Callable[[], nn.Module], state: Mapping[str, torch.Tensor]) -> nn.Module:
    """`network()` in eval mode holding `state`'s tensors for its own keys (floats as float32, on the CPU); the rest
    of `state` is dropped, and an optional key `state` leaves out (BatchNorm's counter) starts at zero. The network
    is built on the meta device and takes the tensors as they are, so no memory goes to initial values."""
    with torch.device("meta"):
        module = network()
    used = {}
    for key, meta in module.state_dict().items():
        value = state[key] if key in state else torch.zeros(meta.shape, dtype=meta.dtype)
        used[key] = value.float() if value.is_floating_point() else value
    module.load_state_dict(used, strict=True, assign=True)
    return module.eval().requires_grad_(False)
