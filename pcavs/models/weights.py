"""Find, check and load the released PC-AVS checkpoint (spec §1).

`latest_net_{G,V,E,A_sync}.pth` are plain state dicts. Every key of every file must match
the architecture (name and shape) before anything is loaded; tensors that inference never
reads are then dropped. A slim `.safetensors` file (`pcavs convert`) holds only the tensors
inference reads and loads the same networks faster.

demo.zip has no published hash, so `pcavs download` records the SHA-256 of each file it
installs in `SHA256SUMS` beside them (the format `sha256sum -c` reads); every load checks
the files against it, so a file that changed after the install is refused.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

from ..core.errors import WeightsError, reason
from ..core.files import AtomicFile
from .checkpoint import build, check_state_dict, expected_keys, file_sha256, read_state_dict
from .encoders import AudioEncoder, IdentityEncoder, PoseMouthEncoder
from .generator import Generator
from .registry import PCAVS, find

NETWORKS: dict[str, type[nn.Module]] = {"G": Generator, "V": IdentityEncoder, "E": PoseMouthEncoder, "A_sync": AudioEncoder}
NUM_CLASSES = 5830  # identities in the training set: size of the classifier heads
DOWNLOAD_HINT = PCAVS.hint
RECORD = "SHA256SUMS"  # beside the installed files: the SHA-256 of each at install time, as `sha256sum` writes it
_RECORD_LINE = re.compile(r"([0-9a-f]{64}) [ *](latest_net_[A-Za-z0-9_]+\.pth)")


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
    """Where the weights are: the argument, else $PCAVS_CHECKPOINTS, else ./checkpoints/demo, else the user cache
    (see registry.find: the folder or slim .safetensors file returned exists)."""
    return find(PCAVS.name, checkpoints)


def write_record(folder: Path, digests: Mapping[str, str]) -> None:
    """Write `folder`/SHA256SUMS: one `<sha256>  <file name>` line per installed file."""
    lines = "".join(f"{digests[name]}  {name}\n" for name in sorted(digests))
    (folder / RECORD).write_text(lines, encoding="ascii")


def check_record(folder: str | os.PathLike) -> dict[str, str] | None:
    """Check every file that `folder`/SHA256SUMS lists against the SHA-256 recorded at install time; the
    checked names and their SHA-256, or None when the folder has no record (weights placed there by hand).

    A WeightsError, naming the file and both hashes, when a file changed since it was installed.
    """
    folder = Path(folder)
    record = folder / RECORD
    again = f"delete {folder} and run `pcavs download` again"
    try:
        text = record.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{record}: cannot be read ({reason(exc)}); {again}") from None
    expected = {}
    for line in text.splitlines():
        found = _RECORD_LINE.fullmatch(line.strip())
        if found is None:
            raise WeightsError(f"{record}: the line {line[:80]!r} is not '<sha256>  latest_net_<name>.pth'; {again}")
        expected[found[2]] = found[1]
    for name, digest in expected.items():
        path = folder / name
        if not path.is_file():
            raise WeightsError(f"{path}: missing, though {RECORD} lists it; {again}")
        actual = file_sha256(path)
        if actual != digest:
            raise WeightsError(f"{path}: SHA-256 {actual} is not {digest}, recorded in {RECORD} when it was "
                               f"installed: the file changed since; {again}")
    return expected


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


def load_checkpoint_file(net: str, path: str | os.PathLike, label: str | None = None) -> nn.Module:
    """Load one `latest_net_{net}.pth` strictly; the returned module holds only what inference reads.

    Errors name `label` (default: the path).
    """
    label = label or str(path)
    state = read_state_dict(path, label, DOWNLOAD_HINT)
    check_state_dict(state, expected_keys(NETWORKS[net], unused_shapes(net)), label, f"PC-AVS {net}", DOWNLOAD_HINT)
    return build(NETWORKS[net], state)


def verify_file(path: Path, label: str) -> None:
    """Raise WeightsError (naming `label`) unless `path`, a `latest_net_<net>.pth`, loads strictly: an install's check."""
    load_checkpoint_file(path.name.removeprefix("latest_net_").removesuffix(".pth"), path, label)


def load_networks(checkpoints: str | os.PathLike | None = None) -> Networks:
    """Load the four networks (on the CPU) from a checkpoint folder or a slim .safetensors file."""
    location = find_checkpoints(checkpoints)
    if location.suffix == ".safetensors":
        return _load_slim(location)
    check_record(location)
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
    with AtomicFile(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pcavs-slim", "dtype": str(dtype).removeprefix("torch.")})
    return out


def _load_slim(path: Path) -> Networks:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise WeightsError(f"{path}: truncated or not a safetensors file ({reason(exc)}); convert it again") from None
    modules = {}
    for net in NETWORKS:
        prefix = f"{net}."
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state_dict(state, expected_keys(NETWORKS[net]), f"{path} ({net})", f"slim PC-AVS {net}",
                         "convert it again with `pcavs convert`")
        modules[net] = build(NETWORKS[net], state)
    return Networks(**modules)
