"""Optional face restoration with GFPGAN v1.4: find, check and load its checkpoint; `Restorer` runs it.

The released `GFPGANv1.4.pth` (TencentARC/GFPGAN, release v1.3.0; Apache-2.0 code, weights
trained on FFHQ) is downloaded on the user's request, never shipped. It is a dict
`{"params_ema": state_dict}` (or `"params"`), zip or legacy torch format; it is read with
`weights_only=True`, every key and shape is checked against the network, and the tensors
restoration never reads are dropped. Faces are 512x512 RGB in GFPGAN's aligned (FFHQ) frame.
"""
from __future__ import annotations

import gc
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from .download import fetch_file
from .errors import InputError, NetworkError, WeightsError
from .gfpgan import GFPGAN, SIZE, unused_shapes
from .options import NOISE_MODES
from .weights import cache_dir

FILENAME = "GFPGANv1.4.pth"
URL = "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
CONTAINER_KEYS = ("params_ema", "params")  # GFPGAN's loader prefers the EMA weights
ENV = "PCAVS_GFPGAN"
CACHE_SUBDIR = "gfpgan"
DOWNLOAD_HINT = "run `pcavs download gfpgan` (or `pcavs download gfpgan --from-file GFPGANv1.4.pth`)"


def default_path() -> Path:
    """Where `pcavs download gfpgan` installs the checkpoint: the user cache."""
    return cache_dir() / CACHE_SUBDIR / FILENAME


def _in_folder(path: Path) -> Path:
    return path / FILENAME if path.is_dir() else path


def candidates(checkpoint: str | os.PathLike | None = None) -> list[Path]:
    """Where pcavs looks, in order: the argument, else $PCAVS_GFPGAN, else the user cache (a folder means its GFPGANv1.4.pth)."""
    if checkpoint is not None:
        return [_in_folder(Path(checkpoint).expanduser())]
    env = os.environ.get(ENV)
    return ([_in_folder(Path(env).expanduser())] if env else []) + [default_path()]


def find_checkpoint(checkpoint: str | os.PathLike | None = None) -> Path:
    """The first checkpoint file of `candidates`; a WeightsError naming where pcavs looked when there is none."""
    looked = candidates(checkpoint)
    for path in looked:
        if path.is_file():
            return path
    raise WeightsError(f"no GFPGAN v1.4 weights found (looked in {', '.join(map(str, looked))}); {DOWNLOAD_HINT}")


def download_checkpoint(
    dest: str | os.PathLike | None = None,
    url: str | None = None,
    from_file: str | os.PathLike | None = None,
    progress: bool = True,
) -> Path:
    """Install GFPGANv1.4.pth (from the release, `url`, or a copy the user has) at `dest`: a file path, or a
    folder (default: the user cache). It must load strictly before it is renamed into place."""
    target = default_path() if dest is None else Path(dest).expanduser()
    if dest is not None and (target.is_dir() or target.suffix != ".pth"):
        target = target / FILENAME
    source = str(from_file) if from_file is not None else url or URL
    return fetch_file(url or URL, target, lambda temp: verify_checkpoint(temp, source), from_file=from_file,
                      progress=progress, command="pcavs download gfpgan")


def ensure_checkpoint(checkpoint: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """`find_checkpoint`; when there is none anywhere (and no path was given), download it into the user cache."""
    try:
        return find_checkpoint(checkpoint)
    except WeightsError:
        if checkpoint is not None:
            raise
    looked = ", ".join(map(str, candidates()))
    print(f"pcavs: no GFPGAN v1.4 weights yet; downloading {FILENAME} (349 MB) from the GFPGAN release into {default_path().parent}")
    try:
        return download_checkpoint(progress=progress)
    except NetworkError as exc:
        raise NetworkError(f"no GFPGAN v1.4 weights found (looked in {looked}) and {exc}") from None


def read_checkpoint(path: str | os.PathLike, label: str | None = None) -> dict[str, torch.Tensor]:
    """The state dict inside a GFPGAN checkpoint (`params_ema`, else `params`), read with weights_only=True."""
    path = Path(path)
    label = label or str(path)
    if not path.is_file():
        raise WeightsError(f"{label}: file not found; {DOWNLOAD_HINT}")
    with open(path, "rb") as handle:
        head = handle.read(2)
    if head != b"PK" and head[:1] != b"\x80":  # neither torch's zip format nor a pickle (the legacy format)
        raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {DOWNLOAD_HINT}")
    try:  # zip checkpoints are memory-mapped; legacy (non-zip) ones are read whole
        container = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as exc:
        reason = "unpickling failed"
        if "weights only" in str(exc).lower() or "weights_only" in str(exc).lower():
            reason = "it holds objects that safe loading (weights_only=True) refuses; pcavs never loads them unsafely"
        raise WeightsError(f"{label}: cannot be loaded: {reason}; {DOWNLOAD_HINT}") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile):
        raise WeightsError(f"{label}: truncated or not a PyTorch checkpoint; {DOWNLOAD_HINT}") from None
    key = next((k for k in CONTAINER_KEYS if isinstance(container, dict) and k in container), None)
    state = container.get(key) if key else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{label}: not a GFPGAN checkpoint (no 'params_ema' or 'params' state dict); {DOWNLOAD_HINT}")
    return state


def check_state_dict(state: dict[str, torch.Tensor], label: str) -> None:
    """Strict key and shape check against GFPGAN v1.4 plus the tensors restoration never reads."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GFPGAN().state_dict().items()}
    expected.update(unused_shapes())
    not_v14 = f"not a GFPGAN v1.4 checkpoint; {DOWNLOAD_HINT}"
    missing = [k for k in expected if k not in state]
    if missing:
        raise WeightsError(f"{label}: missing key {missing[0]!r} ({len(missing)} missing): {not_v14}")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise WeightsError(f"{label}: unexpected key {unexpected[0]!r} ({len(unexpected)} unexpected): {not_v14}")
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape or not state[key].is_floating_point():
            raise WeightsError(f"{label}: key {key!r} is {state[key].dtype} {tuple(state[key].shape)}, expected {shape}: {not_v14}")


def load_gfpgan(path: str | os.PathLike, label: str | None = None) -> GFPGAN:
    """The network from a checkpoint file (on the CPU, float32, eval mode), holding only what restoration reads."""
    state = read_checkpoint(path, label)
    check_state_dict(state, label or str(path))
    with torch.device("meta"):
        net = GFPGAN()
    used = {k: state[k].float() for k in net.state_dict()}
    net.load_state_dict(used, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def verify_checkpoint(path: Path, label: str | None = None) -> None:
    """Raise WeightsError (naming `label`, default the path) unless `path` loads as GFPGAN v1.4:
    the check a download must pass before it is installed."""
    load_gfpgan(path, label)
    gc.collect()  # let go of the memory-mapped file before it is renamed (Windows)


def to_input(faces: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(B, 512, 512, 3) uint8 RGB -> (B, 3, 512, 512) in [-1, 1], as GFPGAN's own preprocessing makes it."""
    tensor = torch.from_numpy(np.ascontiguousarray(faces)).to(device).permute(0, 3, 1, 2).float()
    return (tensor / 127.5 - 1.0).to(dtype)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Network output (B, 3, H, W) -> (B, H, W, 3) uint8: clamp to [-1, 1], scale, round half to even."""
    scaled = ((images.float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).round_()
    return scaled.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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
        self.net = net.to(device=device, dtype=dtype)

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike | None = None, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None
    ) -> "Restorer":
        """Load GFPGANv1.4.pth from `path` (a file or its folder), else $PCAVS_GFPGAN, else the user cache
        (downloading it there first when it is nowhere)."""
        from .pipeline import resolve_device, resolve_dtype

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
        batch_size = batch_size or self.default_batch_size()
        out = np.empty_like(faces)
        for start in range(0, len(faces), batch_size):
            chunk = faces[start:start + batch_size]
            maps = None if noise == "fixed" else [n.to(self.dtype) for n in self.net.random_noise(len(chunk), generator)]
            out[start:start + len(chunk)] = to_uint8(self.net(to_input(chunk, self.device, self.dtype), maps))
        return out
