"""Find, check and load the released PC-AVS checkpoint (spec §1).

`latest_net_{G,V,E,A_sync}.pth` are plain state dicts. Every key of every file must match
the architecture (name and shape) before anything is loaded; tensors that inference never
reads are then dropped. A slim `.safetensors` file (`pcavs convert`) holds only the tensors
inference reads and loads the same networks faster.
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .encoders import AudioEncoder, IdentityEncoder, PoseMouthEncoder
from .errors import WeightsError
from .generator import Generator

NETWORKS: dict[str, type[nn.Module]] = {"G": Generator, "V": IdentityEncoder, "E": PoseMouthEncoder, "A_sync": AudioEncoder}
NUM_CLASSES = 5830  # identities in the training set: size of the classifier heads
DEFAULT_SUBDIR = "demo"  # demo.zip unpacks to demo/
DOWNLOAD_HINT = "run `pcavs download` (or `pcavs download --from-zip demo.zip`) to install the weights"


def checkpoint_filename(net: str) -> str:
    return f"latest_net_{net}.pth"


def unused_shapes(net: str) -> dict[str, tuple[int, ...]]:
    """Tensors of the released files that inference never reads, with their shapes."""
    if net == "G":
        shapes = {"input.input": (1, 512, 7, 7)}
        for i in range(1, 9):  # the 8-layer mapping MLP
            shapes[f"style.{i}.weight"] = (2560, 2560)
            shapes[f"style.{i}.bias"] = (2560,)
        return shapes
    heads = {
        "V": {"model.fc": (1000, 2048), "fc": (NUM_CLASSES, 2048)},
        "E": {"classifier.0": (512, 512), "classifier.2": (NUM_CLASSES, 512), "mouth_fc.1": (NUM_CLASSES, 512),
              "headpose_fc.1": (NUM_CLASSES, 12)},
        "A_sync": {"fc": (NUM_CLASSES, 512)},
    }[net]
    shapes = {}
    for name, (rows, cols) in heads.items():
        shapes[f"{name}.weight"] = (rows, cols)
        shapes[f"{name}.bias"] = (rows,)
    return shapes


def find_checkpoints(checkpoints: str | os.PathLike | None = None) -> Path:
    """Where the weights are: the argument, else $PCAVS_CHECKPOINTS, else ./checkpoints/demo, else the user cache."""
    if checkpoints is not None:
        return Path(checkpoints).expanduser()
    looked = []
    env = os.environ.get("PCAVS_CHECKPOINTS")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [Path("checkpoints") / DEFAULT_SUBDIR, cache_dir() / DEFAULT_SUBDIR]
    for path in candidates:
        if _looks_installed(path):
            return path
        looked.append(str(path))
    raise WeightsError(f"no PC-AVS weights found (looked in {', '.join(looked)}); {DOWNLOAD_HINT}")


def cache_dir() -> Path:
    """The user cache: $PCAVS_HOME, default ~/.cache/pcavs."""
    return Path(os.environ.get("PCAVS_HOME", "~/.cache/pcavs")).expanduser()


def _looks_installed(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return all((path / checkpoint_filename(net)).is_file() for net in NETWORKS)


def read_state_dict(path: Path, label: str | None = None, hint: str = DOWNLOAD_HINT) -> dict[str, torch.Tensor]:
    """torch.load with weights_only=True; every failure becomes one WeightsError naming the file (or `label`)
    and ending with `hint` (what to do)."""
    label = label or str(path)
    if not path.is_file():
        raise WeightsError(f"{label}: file not found; {hint}")
    try:  # zip checkpoints (PyTorch >= 1.6) are memory-mapped; older, legacy ones are read whole
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        if not _pickle_start(path):  # no pickle at all (an HTML page, a text file)
            raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {hint}") from None
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "unpickling failed"
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            reason = "it holds objects that safe loading (weights_only=True) refuses; pcavs never loads them unsafely"
        raise WeightsError(f"{label}: cannot be loaded: {reason}; {hint}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
        raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {hint}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{label}: not a state dict of tensors; {hint}")
    return state


def _pickle_start(path: Path) -> bool:
    """Whether a file begins as torch.save's files do: a zip, or a pickle of protocol 2 or later (the PROTO opcode)."""
    with open(path, "rb") as handle:
        start = handle.read(2)
    return start == b"PK" or start[:1] == b"\x80"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def check_state_dict(net: str, module: nn.Module, state: dict[str, torch.Tensor], path: Path | str) -> None:
    """Strict key and shape check against the architecture plus the known unused tensors."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    expected.update(unused_shapes(net))
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(
            f"{path}: missing key {missing[0]!r} ({len(missing)} missing): not a PC-AVS {net} checkpoint; {DOWNLOAD_HINT}"
        )
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsError(
            f"{path}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected): not a PC-AVS {net} checkpoint; {DOWNLOAD_HINT}"
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise WeightsError(
                f"{path}: key {key!r} has shape {tuple(state[key].shape)}, expected {shape}: not a PC-AVS {net} checkpoint"
            )


@dataclass
class Networks:
    """The four networks, in eval mode, holding only the tensors inference reads."""

    G: Generator
    V: IdentityEncoder
    E: PoseMouthEncoder
    A_sync: AudioEncoder

    @property
    def parameter_count(self) -> int:
        """Resident tensor elements (parameters and buffers) after dropping unused tensors."""
        return sum(t.numel() for m in self.modules() for t in m.state_dict().values())

    def modules(self) -> tuple[nn.Module, ...]:
        return (self.G, self.V, self.E, self.A_sync)

    def to(self, device: torch.device | str) -> "Networks":
        for module in self.modules():
            module.to(device)
        return self


def _build(net: str, state: dict[str, torch.Tensor]) -> nn.Module:
    with torch.device("meta"):
        module = NETWORKS[net]()
    used = {k: v.float() if v.is_floating_point() else v for k, v in state.items() if k in module.state_dict()}
    module.load_state_dict(used, strict=True, assign=True)
    return module.eval().requires_grad_(False)


def load_checkpoint_file(net: str, path: str | os.PathLike, label: str | None = None) -> nn.Module:
    """Load one `latest_net_{net}.pth` strictly; the returned module holds only what inference reads.

    Errors name `label` (default: the path).
    """
    path = Path(path)
    state = read_state_dict(path, label)
    with torch.device("meta"):
        skeleton = NETWORKS[net]()
    check_state_dict(net, skeleton, state, label or path)
    return _build(net, state)


def load_networks(checkpoints: str | os.PathLike | None = None) -> Networks:
    """Load the four networks (on the CPU) from a checkpoint folder or a slim .safetensors file."""
    location = find_checkpoints(checkpoints)
    if location.suffix == ".safetensors":
        return _load_slim(location)
    if not location.is_dir():
        raise WeightsError(f"{location}: no such checkpoint folder; {DOWNLOAD_HINT}")
    return Networks(**{net: load_checkpoint_file(net, location / checkpoint_filename(net)) for net in NETWORKS})


def save_slim(networks: Networks, out: str | os.PathLike, dtype: torch.dtype = torch.float32) -> Path:
    """Write one .safetensors file with only the tensors inference reads (atomically)."""
    from safetensors.torch import save_file

    out = Path(out)
    tensors = {}
    for net in NETWORKS:
        for key, value in getattr(networks, net).state_dict().items():
            value = value.to(dtype) if value.is_floating_point() else value
            tensors[f"{net}.{key}"] = value.contiguous()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pcavs-slim", "dtype": str(dtype).removeprefix("torch.")})
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _load_slim(path: Path) -> Networks:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: truncated or not a safetensors file ({_first_line(exc)}); convert it again") from None
    modules = {}
    for net in NETWORKS:
        prefix = f"{net}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        with torch.device("meta"):
            skeleton = NETWORKS[net]()
        expected = skeleton.state_dict()
        problems = sorted(set(expected) ^ set(state)) or [k for k in expected if expected[k].shape != state[k].shape]
        if problems:
            raise WeightsError(f"{path}: key {prefix}{problems[0]!r} does not match the PC-AVS {net} network; convert it again")
        modules[net] = _build(net, state)
    return Networks(**modules)
